"""The supply-chain guard's parts: vulnerable versions (OSV), cooldown and name rules, the audit
trail and PEP 740 provenance. Pure modules; the index wrapper and the routes use them."""
