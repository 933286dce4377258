// SPDX-License-Identifier: GPL-2.0
/* Test object with a licence the kernel does not consider GPL-compatible. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_prop(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Proprietary";
