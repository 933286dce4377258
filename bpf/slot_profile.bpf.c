// SPDX-License-Identifier: GPL-2.0
/*
 * xdphooks: time one function of a running XDP chain (`xdphooks status
 * --profile`). Loaded once per profiled component with its attach target set
 * at run time (bpf_program__set_attach_target): the slot function
 * xdph_slot_<N> of a static root, or the EXT program of a freplace chain.
 * Attached only while profiling, so a chain pays nothing when it is off.
 *
 * The measured time includes the trampoline's own entry/exit work (tens of
 * ns); docs/admin-guide.md says so.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdph_abi_trace.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdph_prof);
} xdph_prof SEC(".maps");

/* entry time of the call in progress on this CPU (XDP does not nest per CPU) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} xdph_prof_t0 SEC(".maps");

SEC("fentry")
int xdph_prof_enter(void *ctx)
{
	__u32 k = 0;
	__u64 *t0 = bpf_map_lookup_elem(&xdph_prof_t0, &k);

	if (t0)
		*t0 = bpf_ktime_get_ns();
	return 0;
}

SEC("fexit")
int xdph_prof_exit(void *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 k = 0;
	__u64 *t0 = bpf_map_lookup_elem(&xdph_prof_t0, &k);
	struct xdph_prof *p = bpf_map_lookup_elem(&xdph_prof, &k);

	if (!t0 || !p || !*t0) /* attached between a call's entry and exit */
		return 0;
	p->runs++;
	p->ns += now - *t0;
	*t0 = 0;
	return 0;
}

char _license[] SEC("license") = "GPL";
