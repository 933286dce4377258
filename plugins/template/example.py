"""xdphooks plugin "example" (package xdphooks-example).

This module is installed as /usr/lib/xdphooks/plugins/example.py; its object
as /usr/lib/xdphooks/bpf/example.bpf.o. Declare your programs here; the
admin can override priority, policy and interfaces in xdphooks.toml under
[programs.example].
"""

from xdphooks import VerdictPolicy, XdpProgram, hookimpl


@hookimpl
def xdphooks_programs():
    return [XdpProgram(
        name="example",
        object="example.bpf.o",      # relative to /usr/lib/xdphooks/bpf/
        priority=50,                 # 0-1000, lower runs first
        policy=VerdictPolicy.parse("pass=continue"),  # others end the chain
        pin_maps=("bytes_seen",),    # kept across relinks and upgrades
    )]
