// hostflame's sampler: a perf-event program run on every CPU at the sampling frequency,
// counting (process incarnation, thread, comm, user stack, kernel stack) in kernel, plus
// sched tracepoints that tell user space when a process appears, execs or exits.
// Compiled by bcc (agent/bpf_loader.py); map layouts and indexes live in profile.h.
#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf_perf_event.h>
#include "profile.h"

BPF_HASH(counts0, struct sample_key, u64, COUNTS_MAP_SIZE);
BPF_HASH(counts1, struct sample_key, u64, COUNTS_MAP_SIZE);
BPF_STACK_TRACE(stacks0, STACK_MAP_SIZE);
BPF_STACK_TRACE(stacks1, STACK_MAP_SIZE);
BPF_ARRAY(control, u64, CONTROL_SIZE);
BPF_PERCPU_ARRAY(counters, u64, COUNTER_SIZE);
BPF_TABLE("lru_hash", u32, u64, pids, PIDS_MAP_SIZE);
BPF_HASH(filter_pids, u32, u8, 1024);
BPF_PERF_OUTPUT(events);

static __always_inline void bump(int index)
{
    u64 *v = counters.lookup(&index);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline u64 control_value(int index)
{
    u64 *v = control.lookup(&index);
    return v ? *v : 0;
}

static __always_inline int in_user_mode(struct bpf_perf_event_data *ctx)
{
#if defined(__x86_64__) || defined(__TARGET_ARCH_x86)
    return (ctx->regs.cs & 3) == 3;
#else
    return 0; /* unknown on this architecture: a missing user stack is not counted */
#endif
}

static __always_inline void count_stack_error(int id, int collision, int nomem)
{
    if (id == -EEXIST)
        bump(collision);
    else if (id == -ENOMEM)
        bump(nomem);
}

// Adds one sample to a counts map; a racing insert of the same key becomes an add.
// bcc allows no map calls inside macros, so the two generations get a function each.
static __always_inline void count_in_0(struct sample_key *key)
{
    u64 one = 1;
    u64 *n = counts0.lookup(key);
    if (!n && counts0.insert(key, &one) == 0) {
        bump(COUNTER_COUNTED);
        bump(COUNTER_NEW_KEYS);
        return;
    }
    if (!n)
        n = counts0.lookup(key);
    if (n) {
        __sync_fetch_and_add(n, 1);
        bump(COUNTER_COUNTED);
    } else {
        bump(COUNTER_LOST_COUNTS_FULL);
    }
}

static __always_inline void count_in_1(struct sample_key *key)
{
    u64 one = 1;
    u64 *n = counts1.lookup(key);
    if (!n && counts1.insert(key, &one) == 0) {
        bump(COUNTER_COUNTED);
        bump(COUNTER_NEW_KEYS);
        return;
    }
    if (!n)
        n = counts1.lookup(key);
    if (n) {
        __sync_fetch_and_add(n, 1);
        bump(COUNTER_COUNTED);
    } else {
        bump(COUNTER_LOST_COUNTS_FULL);
    }
}

static __always_inline void send_event(void *ctx, u32 kind, u32 pid, u64 incarnation)
{
    struct process_event ev = {};
    ev.kind = kind;
    ev.pid = pid;
    ev.incarnation = incarnation;
    ev.time_ns = bpf_ktime_get_ns();
    bpf_get_current_comm(&ev.comm, sizeof(ev.comm));
    if (events.perf_submit(ctx, &ev, sizeof(ev)) != 0)
        bump(COUNTER_EVENTS_LOST);
}

// The incarnation of process TGID, created (and announced to user space) on its first sample.
static __always_inline u64 incarnation_of(struct bpf_perf_event_data *ctx, u32 tgid)
{
    u64 *known = pids.lookup(&tgid);
    if (known)
        return *known;
    u64 now = bpf_ktime_get_ns();
    if (pids.insert(&tgid, &now) == 0) {
        send_event(ctx, EVENT_NEW_PROCESS, tgid, now);
        return now;
    }
    known = pids.lookup(&tgid); /* another CPU inserted it first */
    if (known)
        return *known;
    bump(COUNTER_PIDS_FULL);
    return now;
}

int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
    bump(COUNTER_TAKEN);
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    u32 tid = (u32)pid_tgid;
    if (tgid == 0) {
        bump(COUNTER_IDLE);
        return 0;
    }
    if (control_value(CONTROL_FILTER_PIDS) && !filter_pids.lookup(&tgid)) {
        bump(COUNTER_FILTERED);
        return 0;
    }

    struct sample_key key = {};
    key.pid = tgid;
    key.tid = tid;
    key.incarnation = incarnation_of(ctx, tgid);
    bpf_get_current_comm(&key.comm, sizeof(key.comm));

    /* Read the generation once: stacks and count must land in the same pair. */
    u64 generation = control_value(CONTROL_GENERATION);
    if (generation == 0) {
        key.kernel_stack_id = stacks0.get_stackid(&ctx->regs, 0);
        key.user_stack_id = stacks0.get_stackid(&ctx->regs, BPF_F_USER_STACK);
    } else {
        key.kernel_stack_id = stacks1.get_stackid(&ctx->regs, 0);
        key.user_stack_id = stacks1.get_stackid(&ctx->regs, BPF_F_USER_STACK);
    }
    count_stack_error(key.kernel_stack_id, COUNTER_KSTACK_COLLISION, COUNTER_KSTACK_NOMEM);
    count_stack_error(key.user_stack_id, COUNTER_USTACK_COLLISION, COUNTER_USTACK_NOMEM);
    if (key.user_stack_id < 0 && key.user_stack_id != -EEXIST && key.user_stack_id != -ENOMEM &&
        in_user_mode(ctx))
        bump(COUNTER_USTACK_MISSING);

    if (generation == 0)
        count_in_0(&key);
    else
        count_in_1(&key);
    return 0;
}

// A new image: the old incarnation ends; the next sample starts a new one.
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 *known = pids.lookup(&tgid);
    if (!known)
        return 0; /* never sampled: nothing to tell */
    u64 incarnation = *known;
    pids.delete(&tgid);
    send_event(args, EVENT_EXEC, tgid, incarnation);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (tgid != (u32)pid_tgid)
        return 0; /* a thread, not the process */
    u64 *known = pids.lookup(&tgid);
    if (!known)
        return 0;
    u64 incarnation = *known;
    pids.delete(&tgid);
    send_event(args, EVENT_EXIT, tgid, incarnation);
    return 0;
}
