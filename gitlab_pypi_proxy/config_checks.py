"""What `check-config` (and `serve`, at start) says about a configuration that loads but cannot
work as meant: an error where nothing could work, a warning where a part cannot. One line each,
naming the file and the key, never a secret."""

from dataclasses import dataclass

from gitlab_pypi_proxy.config import Config


@dataclass(frozen=True)
class Problem:
    error: bool  # True: nothing can work, check-config exits 2; False: a warning
    line: str

    def __str__(self) -> str:
        return f"{'error' if self.error else 'warning'}: {self.line}"


def problems(config: Config) -> list[Problem]:
    found: list[Problem] = []
    path, auth = config.path, config.auth
    if not config.sources:
        found.append(Problem(True, f"{path}: sources: no [[sources]]: there is nothing to serve"))
    if not auth.anonymous_read and not config.users and not auth.passthrough:
        found.append(
            Problem(
                True,
                f"{path}: auth.anonymous_read: false, with no [[users]] and passthrough off: "
                "nobody can read",
            )
        )
    uploadable = {s.name for s in config.sources if s.kind == "gitlab_project"}
    for number, user in enumerate(config.users):
        targets = uploadable if "*" in user.upload else user.upload & uploadable
        if targets and not user.gitlab_token:
            found.append(
                Problem(
                    False,
                    f"{path}: users[{number}].gitlab_token: user {user.name!r} may upload to "
                    f"{', '.join(sorted(targets))} but has no gitlab_token (unset or empty): "
                    "each of their uploads will be refused (403)",
                )
            )
        elsewhere = sorted(n for n in user.upload - uploadable - {"*"})
        if elsewhere:
            found.append(
                Problem(
                    False,
                    f"{path}: users[{number}].upload: {', '.join(elsewhere)} is not a "
                    "gitlab_project source: GitLab takes uploads into a project only",
                )
            )
    return found
