"""The status page's section on the supply-chain guard: the policy in force and what it did
(files held, yanked and refused, summed over every worker since they started)."""

from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.rules import PolicySettings, format_duration


def policy_rows(
    policy: PolicySettings, advisories: Advisories, counts: dict[str, float]
) -> dict[str, str]:
    """Label → value, in the order shown."""
    if policy.min_age:
        sources = ", ".join(sorted(policy.min_age_sources)) or "no source"
        cooldown = f"{format_duration(policy.min_age)} on {sources}"
        cooldown += f"; files of unknown age: {policy.unknown_age}"
        cooldown += (
            "; held files listed as yanked" if policy.held == "yank" else "; held files hidden"
        )
    else:
        cooldown = "off"
    rows = {"Cooldown (min_age)": cooldown}
    if policy.exempt:
        rows["Exempt"] = ", ".join(e.entry for e in policy.exempt)
    for source, named in sorted(policy.sources.items()):
        parts = []
        if named.include is not None:
            parts.append("only " + ", ".join(g.pattern for g in named.include))
        if named.exclude:
            parts.append("never " + ", ".join(g.pattern for g in named.exclude))
        if parts:
            rows[f"Names from {source}"] = "; ".join(parts)
    if advisories.path is None:
        rows["Vulnerabilities"] = "no OSV export configured"
    else:
        known = len(advisories.index.by_name)
        rows["Vulnerabilities"] = (
            f"{policy.vulnerable}: {advisories.index.stats.advisories} advisories on {known}"
            f" projects from {advisories.path}"
        )
    rows["Files held back (listings)"] = f"{counts.get('held', 0):.0f}"
    rows["Files yanked for advisories (listings)"] = f"{counts.get('yanked', 0):.0f}"
    rows["File requests refused"] = f"{counts.get('refused', 0):.0f}"
    return rows
