"""xdphooks plugin: per-L4-protocol packet counter (package xdphooks-counter).

Always passes; runs late (priority 90) so it counts what earlier programs let
through. ``proto_count`` is pinned under
``<bpffs>/xdphooks/maps/counter/proto_count``.
"""

from xdphooks import VerdictPolicy, XdpProgram, hookimpl


@hookimpl
def xdphooks_programs():
    return [XdpProgram(
        name="counter",
        object="counter.bpf.o",
        priority=90,
        policy=VerdictPolicy.parse("pass=continue"),
        pin_maps=("proto_count",),
    )]
