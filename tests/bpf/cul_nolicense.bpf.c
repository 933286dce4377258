// An object without a license section (xdp-tutorial's vlan solutions are such): the
// kernel takes it as proprietary, so it cannot join a static (one GPL program) chain.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int cul_nolicense(struct xdp_md *ctx)
{
	return XDP_PASS;
}
