"""xdphooks plugin: IPv4 source blocklist (package xdphooks-firewall).

Runs early (priority 10): passing traffic continues down the chain, dropped
traffic ends it. The ``blocklist`` map is pinned by xdphooks under
``<bpffs>/xdphooks/maps/firewall/blocklist`` and survives relinks.
"""

from xdphooks import VerdictPolicy, XdpProgram, hookimpl


@hookimpl
def xdphooks_programs():
    return [XdpProgram(
        name="firewall",
        object="firewall.bpf.o",
        priority=10,
        policy=VerdictPolicy.parse("pass=continue,drop=return"),
        pin_maps=("blocklist",),
    )]
