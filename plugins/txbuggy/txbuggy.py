"""xdphooks plugin: a buggy "firewall" that answers UDP port 9 with XDP_TX
(package xdphooks-txbuggy).

Shipped with ``tx=log``: the chain records an event naming this program and
carries on, so the bug is visible in ``xdphooks status`` without bouncing
traffic back onto the wire.
"""

from xdphooks import VerdictPolicy, XdpProgram, hookimpl


@hookimpl
def xdphooks_programs():
    return [XdpProgram(
        name="txbuggy",
        object="txbuggy.bpf.o",
        priority=50,
        policy=VerdictPolicy.parse("pass=continue,tx=log"),
        pin_maps=(),  # no state worth keeping across relinks
    )]
