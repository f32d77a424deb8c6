"""The status page's section on the supply-chain guard: the policy in force and what it did
(files held, yanked and refused, and refused by each rule, summed over every worker since they
started: the counts start again at zero when the proxy restarts, and say so)."""

from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.rules import PolicySettings, format_duration


def policy_rows(
    policy: PolicySettings,
    advisories: Advisories,
    counts: dict[str, float],
    by_rule: dict[str, float] | None = None,
) -> dict[str, str]:
    """Label → value, in the order shown. `counts`: by verdict; `by_rule`: file requests
    refused by each rule."""
    by_rule = by_rule or {}
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
    rows["Malicious packages (OSV MAL- ids)"] = (
        "blocked: never served, listed as held files are"
        if policy.malicious == "block"
        else "yanked like other advisories"
    )
    for rule in policy.deny:
        refused = by_rule.get(rule.entry, 0)
        rows[f"Deny {rule.entry}"] = f"{refused:.0f} file requests refused since start"
    rows["Files held back (listings)"] = f"{counts.get('held', 0):.0f} since start"
    rows["Files yanked for advisories (listings)"] = f"{counts.get('yanked', 0):.0f} since start"
    rows["File requests refused"] = f"{counts.get('refused', 0):.0f} since start"
    others = sorted(set(by_rule) - {r.entry for r in policy.deny})
    if others:
        rows["Refused by rule"] = (
            ", ".join(f"{rule}: {by_rule[rule]:.0f}" for rule in others) + " since start"
        )
    return rows
