// SPDX-License-Identifier: GPL-2.0
/* Test object with libxdp run-config metadata (as xdp-tools declares it). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define XDP_RUN_CONFIG(f) _##f SEC(".xdp_run_config")

struct {
	__uint(priority, 7);
	__uint(XDP_PASS, 1);
	__uint(XDP_DROP, 1);
	__uint(XDP_TX, 0);
} XDP_RUN_CONFIG(xdp_cfg_a);

SEC("xdp")
int xdp_cfg_a(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_cfg_b(struct xdp_md *ctx)
{
	return XDP_DROP;
}

struct {
	__uint(XDP_PASS, 0);
} XDP_RUN_CONFIG(xdp_cfg_b);

char _license[] SEC("license") = "GPL";
