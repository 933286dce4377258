// Calls a kfunc this kernel may lack: bpf_xdp_flow_lookup (Linux 6.10+, in the
// nf_flow_table module's BTF). Without it libbpf refuses the chain it is linked into.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_fib_lookup;
struct bpf_flowtable_opts;
extern struct flow_offload_tuple_rhash *
bpf_xdp_flow_lookup(struct xdp_md *ctx, struct bpf_fib_lookup *tuple,
		    struct bpf_flowtable_opts *opts, __u32 opts_len) __ksym;

SEC("xdp")
int cul_kfunc(struct xdp_md *ctx)
{
	if (bpf_xdp_flow_lookup(ctx, 0, 0, 0))
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
