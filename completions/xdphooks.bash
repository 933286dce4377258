# bash completion for xdphooks(8)
# Option lists mirror xdphooks/cli.py; tests/test_docs_cli.py checks them.
# Self-contained (no bash-completion helpers, no python): it runs on every TAB.

_xdphooks_plugins()
{
    local d f
    for d in /usr/lib/xdphooks/plugins /etc/xdphooks/plugins; do
        for f in "$d"/*.py; do
            [ -e "$f" ] || continue
            f=${f##*/}
            printf '%s\n' "${f%.py}"
        done
    done
}

# IFNAME of this namespace, and NETNS/ then NETNS/IFNAME for named namespaces.
_xdphooks_interfaces()
{
    local cur=$1 ns
    if [[ $cur == */* ]]; then
        ns=${cur%%/*}
        ip -n "$ns" -o link show 2>/dev/null |
            awk -F': ' -v ns="$ns" '{ sub(/@.*/, "", $2); print ns "/" $2 }'
        return
    fi
    ls /sys/class/net 2>/dev/null
    ip netns list 2>/dev/null | awk '{ print $1 "/" }'
}

# The interfaces xdphooks chains (NETNS/IFNAME or IFNAME), from "xdphooks status
# --json" (indent 2: an interface's own keys are at 6 spaces, its programs' deeper).
_xdphooks_chained()
{
    xdphooks status --json 2>/dev/null | awk '
        /^      "name": "/  { n = $0; sub(/^      "name": "/, "", n); sub(/",?$/, "", n) }
        /^      "netns": "/ { s = $0; sub(/^      "netns": "/, "", s); sub(/",?$/, "", s)
                              print s "/" n }
        /^      "netns": null/ { print n }'
}

_xdphooks_complete_chained()
{
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(_xdphooks_chained)" -- "$1"))
}

_xdphooks_complete_ifaces()
{
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(_xdphooks_interfaces "$1")" -- "$1"))
    # "blue/" is a namespace: let the user go on typing the interface.
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == */ ]]; then
        compopt -o nospace 2>/dev/null
    fi
}

_xdphooks()
{
    local cur prev cmd i w
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    # "--trigger=r": bash splits at "=" (COMP_WORDBREAKS) into "--trigger" "=" "r".
    if [[ $cur == = ]]; then
        cur= prev=${COMP_WORDS[COMP_CWORD-1]}
    elif [[ $prev == = ]]; then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    fi

    local commands="reconcile plan status teardown doctor trace watch events history metrics"
    local global_opts="--root --bpffs --disable -h --help"

    # The command is the first word that is neither an option nor its value.
    cmd=
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
            --root|--bpffs|--disable) ((i++)) ;;
            -*) ;;
            *) cmd=$w; break ;;
        esac
    done

    case $prev in
        --root|--bpffs)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --disable)
            COMPREPLY=($(compgen -W "$(_xdphooks_plugins)" -- "$cur")); return ;;
        --file)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --trigger)
            COMPREPLY=($(compgen -W "rpm dpkg-configure dpkg-triggered boot udev manual" -- "$cur"))
            return ;;
        --interface)
            _xdphooks_complete_ifaces "$cur"; return ;;
        --textfile)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --pcap)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --capture)
            COMPREPLY=($(compgen -W "exit entry entry,exit" -- "$cur")); return ;;
        --watch|--seconds|--udp|--tcp|-n|--lines|--profile|--count|--listen|--snaplen)
            return ;;  # a number or a packet description: nothing to offer
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts=
    case $cmd in
        reconcile) opts="--trigger --takeover --interface -q --quiet --check" ;;
        plan)      opts="--json" ;;
        status)    opts="--json --watch --brief --profile" ;;
        teardown)  opts="--all" ;;
        doctor)    opts="--capabilities-json" ;;
        trace)     opts="--udp --tcp --file --live --count --seconds --pcap --snaplen --capture" ;;
        watch)     opts="--seconds" ;;
        events)    opts="--json --pcap" ;;
        history)   opts="-n --lines --json" ;;
        metrics)   opts="--textfile --listen --allow-remote --openmetrics --seconds" ;;
        *)         return ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts -h --help" -- "$cur"))
        return
    fi
    case $cmd in
        # only the chained interfaces make sense here, not every host interface
        teardown|trace|events) _xdphooks_complete_chained "$cur" ;;
    esac
}

complete -F _xdphooks xdphooks
