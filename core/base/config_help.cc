// The text of `geops --help`: every variable, its meaning and its default.
// Kept apart from the parser so that each reads on its own; when a variable
// changes, both files change in the same commit.
#include <string>

#include "core/base/config.h"

namespace geops {

std::string ConfigHelp() {
  return R"(geops: a two-tier parameter server (GeoMX / ps-lite compatible).

usage: geops [--help] [--gen-keyfile FILE] [--check-config]
  The role and the whole topology come from the environment, exactly as for
  GeoMX and ps-lite. A worker role runs the built-in synthetic trainer; a
  training program links libgeops and uses geops::KVWorker instead (or, in
  Python, `import geops`). --check-config parses the environment, prints
  "configuration ok: ROLE" and exits 0, or prints the error and exits 2,
  without starting anything.

Roles
  DMLC_ROLE                 scheduler | server | worker: the role in the party
                            (local tier). Unset only for the global scheduler.
  DMLC_ROLE_GLOBAL          global_scheduler | global_server | worker: the role
                            in the global tier. global_server needs
                            DMLC_ROLE=server. A server with a global scheduler
                            address is a global-tier worker even when unset.
  DMLC_ROLE_MASTER_WORKER   1: this worker (DMLC_ROLE=worker) is the master
                            worker: it sets the update rule and pushes the
                            initial parameters. Default 0.

Local tier (one per party)
  DMLC_PS_ROOT_URI          IP or host name of the party's scheduler.
  DMLC_PS_ROOT_PORT         its port, 1..65535.
  DMLC_NUM_SERVER           servers registered with that scheduler (>= 1).
                            In the central party these are the global servers.
  DMLC_NUM_WORKER           workers registered with that scheduler (>= 1).

Global tier
  DMLC_PS_GLOBAL_ROOT_URI   IP or host name of the global scheduler.
  DMLC_PS_GLOBAL_ROOT_PORT  its port, 1..65535.
  DMLC_NUM_GLOBAL_SERVER    global servers (>= 1). The global scheduler falls
                            back to DMLC_NUM_SERVER when unset.
  DMLC_NUM_GLOBAL_WORKER    global-tier workers, i.e. the local servers of all
                            parties (>= 1); falls back to DMLC_NUM_WORKER for
                            the global scheduler.

Training
  DMLC_NUM_ALL_WORKER       training workers in the whole cluster. The
                            built-in trainer needs it to predict the exact
                            global sum when there is more than one party
                            (default: its own party's training workers).
  DMLC_ENABLE_CENTRAL_WORKER 1: the central party's workers (the master worker
                            included) train and contribute every round.
                            0 (default): their pushes are ignored and the
                            master worker only initialises. As in GeoMX it
                            is read on the global servers; any process of
                            the central party may set it, and the central
                            scheduler refuses values that disagree.

GeoMX accelerators geops does not implement
  ENABLE_DGT (not 0) is refused at start (geops sends everything reliably
  over TCP); DMLC_UDP_CHANNEL_NUM, DMLC_K, ADAPTIVE_K_FLAG, ENABLE_INTER_TS,
  ENABLE_INTRA_TS and MAX_GREED_RATE_TS are reported once as ignored, with
  what geops does instead. GeoMX's BSC, FP16, MixedSync, HFA and P3 are
  the WAN tier's variables above.

Networking
  DMLC_NODE_HOST            IPv4 address this node listens on and advertises.
  DMLC_INTERFACE            network interface whose IPv4 address to use
                            (when DMLC_NODE_HOST is unset). Default: the
                            address that routes to the scheduler.
  PORT                      this node's local-tier listening port; 0 or unset
                            picks an ephemeral one.
  DMLC_PS_VAN_TYPE          zmq (default) | ibverbs: transport of the local tier.
  DMLC_ENABLE_RDMA          0 | 1 | ibverbs: same as DMLC_PS_VAN_TYPE=ibverbs.
                            The global tier always runs over TCP.
  GEOPS_RDMA_MEM_LIMIT      MiB of memory the rdma transport may register
                            (pin) in all (default 2048).
  GEOPS_RDMA_SLOT_BYTES     receive slot size; larger messages move by RDMA
                            write into registered memory (default 16384).

Liveness
  PS_HEARTBEAT_INTERVAL     seconds between heartbeats (default 1).
  PS_HEARTBEAT_TIMEOUT      seconds of silence after which a peer is declared
                            dead and the cluster stops with an error naming it
                            (default 15; at least twice the interval).
  PS_RESEND                 1: on every tcp tier, requests that were unanswered
                            when their connection broke are sent again, and
                            servers drop the duplicates, so a connection reset
                            mid-round loses and doubles nothing; 0: never.
                            Default: the global (WAN) tier only.
  PS_RESEND_TIMEOUT         at most this many milliseconds from a broken
                            connection to the resend (default 1000).
  GEOPS_GLOBAL_HEARTBEAT_TIMEOUT  the same for the global (WAN) tier, which
                            may need longer: a link between data centres can
                            stall for seconds and recover (default: as
                            PS_HEARTBEAT_TIMEOUT).
  GEOPS_STARTUP_TIMEOUT     seconds a scheduler waits for every node to
                            register, and a node for its node table (default 300).
  GEOPS_CONNECT_TIMEOUT     seconds a node waits for its scheduler to answer
                            its registration; then it stops, naming the
                            scheduler's address (default 30, at most
                            GEOPS_STARTUP_TIMEOUT).

WAN tier (see README "Cross-DC experiments")
  MXNET_KVSTORE_BIGARRAY_BOUND  a key of at least this many elements is spread
                            over every global server, a contiguous slice each,
                            so one big tensor uses all of them (default
                            1000000, as in GeoMX; 0: never). Give every
                            process the same value.
  GEOPS_WAN_COALESCE_BYTES  a party server sends the sums of small keys bound
                            for the same global server in one WAN message of
                            up to this many bytes; a key this big goes alone
                            (default 65536; 0: one message per key).
  GEOPS_WAN_COALESCE_US     ... and no sum waits longer than this for company
                            (microseconds, default 1000); a batch also leaves
                            as soon as the server has read every message its
                            workers sent.
  GEOPS_WAN_DTYPE           float16 (fp16) or bfloat16 (bf16): a party server
                            sends its float32 sums, and gets their results, in
                            16 bits (rounded to nearest even); the global
                            servers sum in float32. Halves the WAN's bytes; the
                            party's own tier stays float32. Default float32.
  ENABLE_P3                 1: a party server sends its sums in priority order
                            (older rounds first, then lower keys: number keys
                            in forward order, as frameworks register layers)
                            with at most GEOPS_WAN_WINDOW_KB on their way up,
                            and pulls their results in the same order with at
                            most as much on its way down, so the first layers
                            overtake big tensors still queued (P3, as in
                            GeoMX). Default 0: as they come.
  GEOPS_WAN_WINDOW_KB       that window in KiB (default 8192); at least the
                            WAN's rate x RTT, or the link idles, and smaller
                            than a round's bytes, or nothing waits to be
                            overtaken.

  A master worker given any of the variables below sends that WAN policy to
  every server with the update rule; it then overrides the servers' own.
  GEOPS_WAN_TOPK            top-k with error feedback on the WAN, both ways: a
                            party server sends this fraction of each float32
                            key (largest magnitudes, exact indices; 0.01%..100%,
                            e.g. 1% or 0.01) and keeps the rest as a residual it
                            adds to the next round; a global server sends its
                            results (sgd: the change of the weights) down the
                            same way. Values in GEOPS_WAN_DTYPE. Default: dense.
  MXNET_KVSTORE_SIZE_LOWER_BOUND  keys smaller than this many elements go dense
                            (default 200000, as in GeoMX).
  GEOPS_WAN_SYNC            mixed: MixedSync. Each party stays synchronous
                            inside; the global servers apply a party's sum
                            when it arrives (sgd rule) and answer at once, so
                            a fast party never waits for a slow one, up to
                            GEOPS_WAN_STALENESS rounds ahead of the slowest.
                            Default sync: every round waits for every party.
  GEOPS_WAN_STALENESS       that bound in rounds (default 2; 0: lock step).
  MXNET_KVSTORE_USE_HFA     1: hierarchical frequency aggregation. Training
                            programs take MXNET_KVSTORE_HFA_K1 local steps
                            (default 20) between pushes of their models; a
                            party server averages its workers' models and
                            sends every MXNET_KVSTORE_HFA_K2-th (default 10)
                            party average to the global servers, which
                            average over all workers (the `average` rule; give
                            them DMLC_NUM_ALL_WORKER).

Security
  GEOPS_GLOBAL_KEYFILE      a key file: the global tier runs ZeroMQ CURVE with
                            it (encrypted, and only holders of the same file
                            may connect, register, send or abort). Give every
                            process of the global tier the same file; make it
                            with `geops --gen-keyfile FILE`. Default: plain.
  GEOPS_LOCAL_KEYFILE       the same for a party's tcp tier (independent of the
                            global one: a party may stay plain).
  GEOPS_RDMA_SECRET_FILE    a file with one line of 16-48 characters that every
                            connection of an rdma tier must present (rdma_cm
                            private data) or be refused. It keeps strangers on
                            the fabric out; it travels in clear, so anyone who
                            can capture the fabric can learn it, and it
                            encrypts nothing. (head -c 24 /dev/urandom | base64)

Durable state (global servers, or a single tier's servers)
  GEOPS_CHECKPOINT_DIR      write checkpoints here: every key's latest value
                            and the update rule, one file per server
                            (server-R-of-N.SEQ.rROUND.ckpt), written to a temporary
                            name, fsynced and renamed. A server started with a
                            directory that holds checkpoints resumes from the
                            newest (the newest round all servers have, when
                            they share it): workers pull the checkpoint's model as
                            round 0 and the master worker's initial values
                            are ignored. A torn or foreign file, or files of a
                            tier with another number of servers, stop the
                            server with an error naming them. Default: none.
  GEOPS_CHECKPOINT_ROUNDS   a checkpoint whenever every key has closed another
                            N rounds (a consistent cut; default 0: off).
  GEOPS_CHECKPOINT_SECONDS  a checkpoint every S seconds (default 300 when
                            GEOPS_CHECKPOINT_DIR is set and neither cadence
                            is). Either way a last one when the job ends.
  GEOPS_CHECKPOINT_KEEP     files kept per server (default 3).

Limits
  GEOPS_MAX_MESSAGE_MB      largest frame (one key's value) a tcp peer may send,
                            in MiB (default 256). A peer announcing more is
                            disconnected before anything is buffered; a sender
                            refuses to build such a frame, naming this variable.
                            Set it to the same value on every node.

Names
  GEOPS_PARTY               this process's party name in logs (default: the
                            local scheduler's host:port). geops-launch sets
                            central, A, B, ...

Logging
  PS_VERBOSE                0 | 1 | 2: 1 logs connections (ids, roles,
                            addresses), 2 also every message.

Built-in trainer (DMLC_ROLE=worker)
  GEOPS_ROUNDS              synchronous rounds to run (default 10).
  GEOPS_KEY_SIZES           comma-separated element counts, one key each
                            (default 262144,262144,131072: about 2.5 MB).
  GEOPS_DTYPE               float32 | float64 | int32 | int64 (default float32).
  GEOPS_RULE                sum | sgd: update rule the master worker sets
                            (default sum).
  GEOPS_LR                  learning rate of sgd (default 0.5).
  GEOPS_PROGRESS            1: print a line per round (default 1).

Example trainer (DMLC_ROLE=worker with GEOPS_TRAIN set)
  GEOPS_TRAIN               softmax | mlp | mlp:HIDDEN: train on Fashion-MNIST
                            (Debian package dataset-fashion-mnist) instead of
                            the synthetic check. The master worker sets the
                            rule (sgd at GEOPS_LR on the global servers, or
                            average with MXNET_KVSTORE_USE_HFA=1) and the
                            initial model; shard 0 prints test accuracy after
                            every epoch. geops-launch --train sets it up.
  GEOPS_SHARD               i/N: this worker's share of the training set
                            (examples i, i+N, ...); geops-launch sets it.
  GEOPS_EPOCHS              passes over the training set (default 3).
  GEOPS_BATCH               examples per step and worker (default 32).
  GEOPS_LR                  learning rate (default 0.1 here).
  GEOPS_LR_DECAY            1 (default): the rate falls linearly to a tenth
                            by the last epoch; 0: constant.
  GEOPS_TRAIN_EXAMPLES      train on the first N images (default all 60000).
  GEOPS_TEST_EXAMPLES       test on the first N images (default all 10000).
  GEOPS_DATA_DIR            where the four .gz files are (default
                            /usr/share/datasets/fashion-mnist).
  GEOPS_SEED                the initial model's seed (default 1).
  GEOPS_TRAIN_TRACE         1: a line per round (geops-train round=N).

Exit status: 0 on an orderly shutdown, 1 on a runtime failure (dead peer,
wrong result), 2 on a configuration error.
)";
}

}  // namespace geops
