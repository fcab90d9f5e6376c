/* hostflame's BPF ABI: the one place for map layouts, counter indexes and sizes.
 * Shared by bpf/profile.bpf.c and mirrored by agent/bpf_abi.py (a unit test compares them
 * through `gcc -E -dM`). Sizes are #ifndef so the loader can override them with -D cflags. */
#ifndef HOSTFLAME_PROFILE_H
#define HOSTFLAME_PROFILE_H

#ifndef COUNTS_MAP_SIZE
#define COUNTS_MAP_SIZE 16384 /* distinct (process, thread, stacks) keys per generation */
#endif
#ifndef STACK_MAP_SIZE
#define STACK_MAP_SIZE 8192 /* distinct stacks per generation and kind */
#endif
#ifndef PIDS_MAP_SIZE
#define PIDS_MAP_SIZE 32768 /* processes with a known incarnation */
#endif
#ifndef EVENTS_PAGES
#define EVENTS_PAGES 64 /* perf buffer pages per CPU for process events */
#endif

#define TASK_COMM_LEN 16
#define MAX_STACK_DEPTH 127

/* The counts map and stack map pair written is chosen by control[CONTROL_GENERATION]; the
 * drain flips it, lets in-flight programs finish, then reads and clears the other pair. */
#define GENERATIONS 2
#define CONTROL_GENERATION 0
#define CONTROL_FILTER_PIDS 1 /* 1: sample only the tgids in filter_pids */
#define CONTROL_SIZE 2

/* Per-CPU counters: every sample taken ends in exactly one of COUNTER_COUNTED,
 * COUNTER_IDLE or COUNTER_LOST_COUNTS_FULL; the rest describe degraded samples. */
#define COUNTER_TAKEN 0            /* program invocations (samples taken) */
#define COUNTER_COUNTED 1          /* samples added to a counts map */
#define COUNTER_IDLE 2             /* samples of the idle task (pid 0), not recorded */
#define COUNTER_FILTERED 3         /* samples of other processes while a pid filter is set */
#define COUNTER_LOST_COUNTS_FULL 4 /* counts map full: sample lost */
#define COUNTER_KSTACK_COLLISION 5 /* bpf_get_stackid -EEXIST for the kernel stack */
#define COUNTER_KSTACK_NOMEM 6     /* -ENOMEM: kernel stack map full */
#define COUNTER_USTACK_COLLISION 7 /* -EEXIST for the user stack */
#define COUNTER_USTACK_NOMEM 8     /* -ENOMEM: user stack map full */
#define COUNTER_USTACK_MISSING 9   /* no user stack (-EFAULT and others) for a user task */
#define COUNTER_EVENTS_LOST 10     /* a process event could not be written to the perf buffer */
#define COUNTER_PIDS_FULL 11       /* the pids map refused an insert */
#define COUNTER_NEW_KEYS 12        /* counts map keys created: the drain reads when these pile up */
#define COUNTER_SIZE 13

/* The key of a counts map entry: one process incarnation, thread, comm and pair of stacks.
 * An incarnation is the bpf_ktime_get_ns() at which the process (or its new image after
 * exec) was first sampled, so a reused pid or an exec never shares a key with its past. */
struct sample_key {
    __u32 pid; /* tgid: the process */
    __u32 tid; /* the thread */
    __u64 incarnation;
    __s32 user_stack_id;   /* < 0: a negative errno from bpf_get_stackid */
    __s32 kernel_stack_id; /* < 0: a negative errno from bpf_get_stackid */
    char comm[TASK_COMM_LEN];
};

#define EVENT_NEW_PROCESS 1 /* first sample of a process incarnation: snapshot it now */
#define EVENT_EXEC 2        /* the process replaced its image: its incarnation ends */
#define EVENT_EXIT 3        /* the process (thread-group leader) exited */

struct process_event {
    __u32 kind;
    __u32 pid;
    __u64 incarnation;
    __u64 time_ns;
    char comm[TASK_COMM_LEN];
};

#endif
