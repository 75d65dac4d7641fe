//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// One generic uprobe program for every catalogue row. The attach cookie names
// a config slot that says what to read from the registers and memory of the
// traced Go process, so adding a probe point never means new BPF code.
//
// Go functions are timed with a uprobe at the entry and one on every RET
// instruction (uretprobes rewrite the return address and break Go's stack
// growth). Entry and RET are paired here, keyed by the goroutine pointer in
// R14, so one ring-buffer record carries a whole span.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_CONFIGS 4096
#define MAX_CAP 8
#define MAX_DEREF 4
#define MAX_NUM 6
#define MAX_STR 3
#define STR_LEN 128
#define MAX_MATCH 8
#define MATCH_LEN 24

// Layout of the x86-64 struct pt_regs (an ABI the kernel keeps stable).
struct regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
	__u64 orig_ax, ip, cs, flags, sp, ss;
};

// Register numbers used by probes.Capture, in Go's ABIInternal order.
enum reg {
	REG_AX, REG_BX, REG_CX, REG_DI, REG_SI, REG_R8, REG_R9, REG_R10, REG_R11,
	REG_SP, REG_DX,
};

enum cap_kind {
	CAP_NONE,
	CAP_REG,     // value = register after derefs, masked to size
	CAP_MEM,     // value = size bytes at (register after derefs) + final_off
	CAP_STR_REGS,// Go string in two registers: ptr = reg, len = len_reg
	CAP_STR_MEM, // Go string or []byte header at (register after derefs) + final_off
};

enum mode {
	MODE_POINT, // emit at once
	MODE_ENTRY, // stash until a RET of the same goroutine
	MODE_RET,   // complete the stashed entry and emit
};

enum cfg_flag {
	// MODE_ENTRY also emits the entry at once (end_ns = 0), so that userspace
	// knows a call is in flight before its RET: the apiserver's request
	// handler ends after the writes made inside it.
	CFG_ANNOUNCE = 1,
};

enum counter {
	CNT_RINGBUF_FULL,
	CNT_STASH_FULL,
	CNT_RET_WITHOUT_ENTRY,
	CNT_READ_ERROR,
	CNT_MAX,
};

struct capture {
	__u8 kind;
	__u8 reg;
	__u8 len_reg;
	__u8 nderef;
	__u8 dst;  // index into event.num or event.str
	__u8 size; // bytes of a numeric value: 1, 2, 4 or 8
	__u8 pad[2];
	__u32 off[MAX_DEREF];
	__u32 final_off;
};

struct probe_config {
	__u32 entry_slot; // MODE_RET: the slot of the entry this RET completes
	__u8 mode;
	__u8 ncap;
	__u16 goid_off;        // runtime.g.goid, by Go version of the target
	__u16 parent_goid_off; // runtime.g.parentGoid
	__u16 flags;           // CFG_*
	struct capture cap[MAX_CAP];
	// With match_n > 0 the event is kept only when the string of capture 0
	// equals one of the match_n values (Row.Only): the calls the row does
	// not trace (etcd's reads at its RPC stats, the apiserver's reads at
	// MonitorRequest) cost the trap and this program, not the ring buffer
	// and the agent.
	__u8 match_n;
	__u8 match_len[MAX_MATCH];
	char match[MAX_MATCH][MATCH_LEN];
};

struct event {
	__u64 start_ns;
	__u64 end_ns;
	__u64 goid;
	__u64 parent_goid;
	__u32 pid;
	__u32 tid;
	__u32 slot;  // the entry slot: which row in which process
	__u32 flags; // bit i: str[i] truncated; bit 8+i: capture i unreadable (16+i: of the RET)
	__u64 num[MAX_NUM];
	__u16 str_len[MAX_STR]; // full length in the target, before truncation
	__u16 pad;
	char str[MAX_STR][STR_LEN];
};

struct stash_key {
	__u32 pid;
	__u32 slot;
	__u64 g;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CONFIGS);
	__type(key, __u32);
	__type(value, struct probe_config);
} configs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_CONFIGS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

// Events each slot's match dropped.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_CONFIGS);
	__type(key, __u32);
	__type(value, __u64);
} filtered SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Entries whose RET has not come yet. Userspace sweeps old ones (a goroutine
// that panicked never returns) and counts them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct stash_key);
	__type(value, struct event);
} stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

// Keep the generated Go types even though no program names them directly.
const struct event *unused_event __attribute__((unused));
const struct probe_config *unused_config __attribute__((unused));
const enum reg *unused_reg __attribute__((unused));
const enum cap_kind *unused_cap_kind __attribute__((unused));
const enum mode *unused_mode __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum cfg_flag *unused_cfg_flag __attribute__((unused));

// The PID namespace of the agent (dev and inode of /proc/self/ns/pid), set
// at load: PIDs are reported as the agent sees them in /proc. Inside a kind
// node (or any nested PID namespace) the kernel's own PIDs would match no
// process the agent found. Zero: report the kernel's PIDs.
volatile const __u64 pidns_dev = 0;
volatile const __u64 pidns_ino = 0;

static __always_inline __u64 current_pid_tgid(void)
{
	if (pidns_ino) {
		struct bpf_pidns_info ns = {};
		if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)) == 0)
			return ((__u64)ns.tgid << 32) | ns.pid;
	}
	return bpf_get_current_pid_tgid();
}

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1;
}

// Waking the reader is paid for by the traced process (irq_work on its CPU)
// and by the agent (one epoll return per event): records go in quietly and
// the agent polls every few milliseconds, unless the ring is filling up:
// past a quarter of it (at most WAKEUP_BYTES), so that a small ring
// (--ring-bytes) wakes the reader long before it is full.
#define WAKEUP_BYTES (256 << 10)

static __always_inline void submit(struct event *ev)
{
	__u64 limit = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 4;
	if (limit > WAKEUP_BYTES)
		limit = WAKEUP_BYTES;
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > limit ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), flags))
		count(CNT_RINGBUF_FULL);
}

#define NREGS (REG_DX + 1)

// Copy the argument registers out of the context once: the verifier allows
// only constant-offset loads from it, and the captures index registers by number.
static __always_inline void load_regs(struct regs *r, __u64 *a)
{
	a[REG_AX] = r->ax;
	a[REG_BX] = r->bx;
	a[REG_CX] = r->cx;
	a[REG_DI] = r->di;
	a[REG_SI] = r->si;
	a[REG_R8] = r->r8;
	a[REG_R9] = r->r9;
	a[REG_R10] = r->r10;
	a[REG_R11] = r->r11;
	a[REG_SP] = r->sp;
	a[REG_DX] = r->dx;
}

static __always_inline __u64 reg_value(__u64 *a, __u8 reg)
{
	return reg < NREGS ? a[reg] : 0;
}

static __always_inline int read_string(struct event *ev, __u8 dst, __u64 ptr, __u64 len)
{
	if (dst >= MAX_STR)
		return -1;
	ev->str_len[dst] = len > 0xffff ? 0xffff : len;
	__u32 n = len > STR_LEN ? STR_LEN : len;
	if (len > STR_LEN)
		ev->flags |= 1 << dst;
	// Hide n from the compiler so the bound check below stays for the verifier.
	asm volatile("" : "+r"(n));
	if (n == 0 || n > STR_LEN)
		return 0;
	return bpf_probe_read_user(ev->str[dst], n, (void *)ptr);
}

static __always_inline int run_capture(__u64 *r, struct capture *c, struct event *ev)
{
	__u64 v = reg_value(r, c->reg);
	__u64 hdr[2];
	int err = 0;

	if (c->kind == CAP_STR_REGS)
		return read_string(ev, c->dst, v, reg_value(r, c->len_reg));

#pragma unroll
	for (int i = 0; i < MAX_DEREF; i++) {
		if (i >= c->nderef)
			break;
		if (v == 0)
			return -1;
		err = bpf_probe_read_user(&v, sizeof(v), (void *)(v + c->off[i]));
		if (err)
			return err;
	}

	switch (c->kind) {
	case CAP_REG:
		break;
	case CAP_MEM:
		if (v == 0)
			return -1;
		err = bpf_probe_read_user(&v, sizeof(v), (void *)(v + c->final_off));
		if (err)
			return err;
		break;
	case CAP_STR_MEM:
		if (v == 0)
			return -1;
		err = bpf_probe_read_user(hdr, sizeof(hdr), (void *)(v + c->final_off));
		if (err)
			return err;
		return read_string(ev, c->dst, hdr[0], hdr[1]);
	default:
		return 0;
	}

	switch (c->size) {
	case 1: v &= 0xff; break;
	case 2: v &= 0xffff; break;
	case 4: v &= 0xffffffff; break;
	}
	if (c->dst < MAX_NUM)
		ev->num[c->dst] = v;
	return 0;
}

// A capture that could not be read sets its bit in ev->flags: bits 8.. for
// the captures of the entry (or of a point), bits 8+MAX_CAP.. for those of
// a RET, which add to the same event.
static __always_inline void run_captures(__u64 *r, struct probe_config *cfg, struct event *ev)
{
	__u32 base = cfg->mode == MODE_RET ? 8 + MAX_CAP : 8;
#pragma unroll
	for (int i = 0; i < MAX_CAP; i++) {
		if (i >= cfg->ncap)
			break;
		if (run_capture(r, &cfg->cap[i], ev))
			ev->flags |= 1 << (base + i);
	}
}

// matches says whether capture 0's string is one of the config's values.
static __always_inline int matches(struct event *ev, struct probe_config *cfg)
{
	__u8 d = cfg->cap[0].dst;
	if (d >= MAX_STR)
		return 0;
	__u16 n = ev->str_len[d];
#pragma unroll
	for (int m = 0; m < MAX_MATCH; m++) {
		if (m >= cfg->match_n)
			break;
		if (n != cfg->match_len[m] || n > MATCH_LEN)
			continue;
		char diff = 0;
#pragma unroll
		for (int i = 0; i < MATCH_LEN; i++)
			if (i < n)
				diff |= ev->str[d][i] ^ cfg->match[m][i];
		if (!diff)
			return 1;
	}
	return 0;
}

static __always_inline int handle(struct regs *r)
{
	__u32 slot = bpf_get_attach_cookie(r);
	struct probe_config *cfg = bpf_map_lookup_elem(&configs, &slot);
	if (!cfg)
		return 0;

	__u64 *hit = bpf_map_lookup_elem(&hits, &slot);
	if (hit)
		*hit += 1;

	__u64 a[NREGS];
	load_regs(r, a);
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = current_pid_tgid();
	struct stash_key key = {
		.pid = pid_tgid >> 32,
		.slot = cfg->mode == MODE_RET ? cfg->entry_slot : slot,
		.g = r->r14,
	};

	if (cfg->mode == MODE_RET) {
		struct event *ev = bpf_map_lookup_elem(&stash, &key);
		if (!ev) {
			count(CNT_RET_WITHOUT_ENTRY);
			return 0;
		}
		ev->end_ns = now;
		run_captures(a, cfg, ev);
		submit(ev);
		bpf_map_delete_elem(&stash, &key);
		return 0;
	}

	__u32 zero = 0;
	struct event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->start_ns = now;
	ev->pid = key.pid;
	ev->tid = (__u32)pid_tgid;
	ev->slot = slot;
	if (r->r14) {
		bpf_probe_read_user(&ev->goid, sizeof(ev->goid), (void *)(r->r14 + cfg->goid_off));
		bpf_probe_read_user(&ev->parent_goid, sizeof(ev->parent_goid), (void *)(r->r14 + cfg->parent_goid_off));
	}
	run_captures(a, cfg, ev);
	if (cfg->match_n && !matches(ev, cfg)) {
		__u64 *f = bpf_map_lookup_elem(&filtered, &slot);
		if (f)
			*f += 1;
		return 0;
	}

	if (cfg->mode == MODE_POINT) {
		ev->end_ns = now;
		submit(ev);
		return 0;
	}
	if (bpf_map_update_elem(&stash, &key, ev, BPF_ANY)) {
		count(CNT_STASH_FULL);
		return 0;
	}
	if (cfg->flags & CFG_ANNOUNCE)
		submit(ev);
	return 0;
}

// The same program twice: attached one uprobe at a time (any kernel with
// attach cookies, 5.15+), or as one uprobe_multi link per row (6.6+), whose
// detach waits for one RCU grace period instead of one per uprobe.
SEC("uprobe")
int kpath_probe(struct regs *r)
{
	return handle(r);
}

SEC("uprobe.multi")
int kpath_probe_multi(struct regs *r)
{
	return handle(r);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
