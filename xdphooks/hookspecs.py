"""Hook specifications: the contract between xdphooks and XDP packages.

A plugin is a Python module (a drop-in file in ``/usr/lib/xdphooks/plugins/``
or a distribution with an ``xdphooks`` entry point) that implements some of
these hooks with the :data:`xdphooks.hookimpl` marker::

    from xdphooks import XdpProgram, VerdictPolicy, hookimpl

    @hookimpl
    def xdphooks_programs():
        return [XdpProgram(name="firewall", object="firewall.bpf.o", priority=10)]

Hooks are grouped by when they run in a reconcile:

1. *Declaration* — :func:`xdphooks_programs`, collected from every plugin.
2. *Planning* — :func:`xdphooks_validate_chain` and :func:`xdphooks_select_mode`,
   once per interface whose chain is about to change.
3. *After the swap* — :func:`xdphooks_chain_attached`, :func:`xdphooks_chain_detached`
   and :func:`xdphooks_reconcile_failed`.

Every hook is called while the coordinator holds its lock, as root, but not in
the coordinator's process: plugins are imported and called in a *plugin host*,
a child process (:mod:`xdphooks.pluginhost`) that holds no lock, no kernel
object and none of the coordinator's state.  Hooks must return quickly: a hook
(or an import) that runs longer than ``hook_timeout`` seconds (config, default
10) is killed with its host, whatever it does (a C loop holding the GIL
included), and reported by plugin name, as is one that ends its host
(``os._exit``, a segfault, closing its descriptors).  The other plugins go on
in a fresh host, where their modules are imported again, so module code should
not count on running once per command.  A hook that raises is reported by
plugin name with the exception's message (escaped to one line) and left out;
it never aborts the whole run by itself.

Arguments and results cross between the processes as data (JSON): arguments
are rebuilt in the host (:class:`xdphooks.InterfaceRef`, :class:`xdphooks.Chain`
with its entries, plain dicts and tuples — a list argument arrives as a tuple),
and results are rebuilt and validated in the coordinator, so a hook must
return the documented types (``XdpProgram``, ``Problem`` from
``veto()``/``warn()``, a mode string) and nothing that needs the plugin's own
classes.  Changing an argument changes only the host's copy.  What a plugin
prints goes nowhere (the last 4 KiB are kept for a failure message).  A reply
larger than 16 MiB kills the host.  Kernel objects: the fds of
:func:`xdphooks_prog_arrays` are passed to the host for the call.

Each implementation runs on its own, under that time limit: one that fails
counts as having returned ``None``. Every hook is called plugin by plugin, in
pluggy's call order as the host's plugin manager reports it, so that every
result can be blamed on the plugin that gave it; :func:`xdphooks_select_mode`
keeps pluggy's ``firstresult`` meaning (the first non-``None`` answer in that
order, ``tryfirst``/``trylast`` apply). Otherwise the call order (pluggy's
LIFO) carries no meaning: the order of programs in a chain comes only from
their data (priority, then name).

Hook wrappers (``wrapper=True``, ``hookwrapper=True``) are not supported: a
plugin with one is refused when it is registered, with an error naming it and
the hook, and none of its hooks run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import pluggy

if TYPE_CHECKING:
    from .model import Chain, InterfaceRef, Problem, XdpProgram

PROJECT = "xdphooks"
hookspec = pluggy.HookspecMarker(PROJECT)


# -------------------------------------------------------------------------
# Declaration
# -------------------------------------------------------------------------


@hookspec
def xdphooks_programs() -> Sequence["XdpProgram"]:
    """Return the XDP programs this plugin contributes.

    Called once per reconcile, ``plan`` and ``status``, for each plugin on its
    own, before anything is planned.

    :returns: a list (possibly empty) of :class:`xdphooks.XdpProgram`.
        Results of all plugins are collected; names must be unique across
        them all.  Anything else (``None``, a non-list, an item that is not an
        ``XdpProgram``) is *bad data*: the plugin is reported by name and left
        out, and if one of its programs is running and ``required`` the whole
        change is refused so that the running chain stays.

    Values left as ``None`` are filled, in this order, from the admin's
    ``[programs.NAME]`` table in ``xdphooks.toml`` (which wins over the
    plugin), from the object's libxdp ``.xdp_run_config`` metadata, and from
    the defaults (priority 50, pass continues, everything else returns).

    Example::

        @hookimpl
        def xdphooks_programs():
            return [XdpProgram(
                name="ddos-filter",
                object="ddos.bpf.o",
                priority=5,
                policy=VerdictPolicy.parse("pass=continue,tx=log"),
                interfaces=("eth*",),
            )]
    """


# -------------------------------------------------------------------------
# Planning
# -------------------------------------------------------------------------


@hookspec
def xdphooks_validate_chain(
    interface: "InterfaceRef", chain: "Chain"
) -> Sequence["Problem"] | None:
    """Veto or warn about a chain planned for one interface.

    Called once per interface whose chain is about to change (not for
    interfaces that stay as they are), after the planner's own checks
    passed, before anything is loaded.  ``plan`` calls it too.

    :param interface: the interface the chain is planned for.
    :param chain: the planned :class:`xdphooks.Chain`, entries in run order.
    :returns: ``None`` or a list of :class:`xdphooks.Problem`; build them with
        :func:`xdphooks.veto` (refuses the change on this interface; the
        running chain stays) and :func:`xdphooks.warn` (reported, change goes
        ahead).  The problems of all plugins are collected.

    Example — at most one load balancer per interface::

        @hookimpl
        def xdphooks_validate_chain(interface, chain):
            lbs = [e.name for e in chain.entries if e.name.startswith("lb-")]
            if len(lbs) > 1:
                return [veto(f"two load balancers on {interface}: {lbs}",
                             fix="disable one with [programs.NAME] enabled = false")]
    """


@hookspec(firstresult=True)
def xdphooks_select_mode(interface: "InterfaceRef", chain: "Chain", probed: str) -> str | None:
    """Choose the linking mode for one interface's chain.

    Called once per interface about to change, after validation, only when
    the configured ``mode`` is ``auto``.

    :param probed: the mode ``auto`` chose: the first usable backend
        (``"freplace"`` if the per-boot probe found it works, else ``"static"``).
    :returns: a mode name (``"static"``, ``"freplace"``: the names in
        ``xdphooks.backends.Mode``) or ``None`` for no opinion.
        ``firstresult``, through pluggy: the first non-``None`` answer in
        pluggy's call order wins (``tryfirst``/``trylast`` apply); if every
        plugin says ``None`` (or fails), ``probed`` is used.  Answering a mode
        that is unknown or not usable on this kernel (``"freplace"`` where the
        probe found it unusable) is an error that refuses the change.
    """


# -------------------------------------------------------------------------
# During the build
# -------------------------------------------------------------------------


@hookspec
def xdphooks_prog_arrays(
    interface: "InterfaceRef", program: str, programs: Mapping[str, int],
    arrays: Mapping[str, int],
) -> None:
    """Fill the PROG_ARRAYs of ``program`` (a program of the chain being built whose
    object has any) with the object's other XDP programs, loaded beside the chain.

    Called while the chain is built, before pre-flight and the swap, once for the
    pre-flight's trial copy and once for the chain that will run (fill both alike);
    arrays initialised declaratively (``.values = {...}``) are filled already. A tail
    call's verdict goes back to the chain's policy for ``program``'s slot. Static mode
    only: in freplace mode the kernel refuses XDP programs in an array an extension
    tail-calls through, so the hook is not called there.

    :param program: the program's name (``XdpProgram.name``): act on yours only.
    :param programs: ``{function name: prog fd}`` of the object's other XDP programs.
    :param arrays: ``{map name: map fd}`` of its PROG_ARRAYs in the new chain; use
        ``bpf_map_update_elem(arrays[m], key, programs[f])``. The fds are valid only
        during the call.
    :returns: nothing. An exception is reported by plugin name and the build goes on.
    """


# -------------------------------------------------------------------------
# After the swap
# -------------------------------------------------------------------------


@hookspec
def xdphooks_chain_attached(
    interface: "InterfaceRef", chain: "Chain", maps: Mapping[str, Mapping[str, str]]
) -> None:
    """A new chain now runs on ``interface``.

    Called after each successful swap (first attach or replacement), still
    inside the coordinator's lock, so a plugin can fill or migrate its maps
    before anyone else changes the chain.

    :param maps: ``{program name: {map name: pinned path}}`` for every pinned
        map of every program in the chain; open a path with ``bpf_obj_get``
        (or ``bpftool map ... pinned PATH``) to read or update it.
    :returns: nothing; return values are ignored.  An exception is reported
        by plugin name, but the swap has happened and is not undone.
    """


@hookspec
def xdphooks_chain_detached(interface: "InterfaceRef", names: Sequence[str]) -> None:
    """The chain on ``interface`` was removed (last program gone, or teardown).

    Called after the detach, inside the lock, once per interface.

    :param names: names of the programs that were running there.
    :returns: nothing.  Pinned maps of programs still declared are kept.
    """


@hookspec
def xdphooks_reconcile_failed(interface: "InterfaceRef", error: str) -> None:
    """A change on ``interface`` was refused or failed; the old chain still runs.

    Called at the end of a reconcile, once per refused or failed interface.
    Called once per failed interface with the same one-line error the admin
    sees (it names the plugin and the fix).  Useful for alerting.

    :returns: nothing.
    """
