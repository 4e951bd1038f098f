// _geops: the worker API of geops for Python (pybind11), over the library's
// WorkerNode and KVWorkerCore: the dtype comes from the array, and the
// checks, the cut per key and the rounds are the C++ worker's own.
//
//   import geops
//   w = geops.Worker()                 # joins the cluster DMLC_* describes
//   w.wait(w.push_pull([0, 1], grads, out))   # out receives the sums
//
// Arrays cross by the buffer protocol and are never copied: a push sends a
// view of the caller's array (a reference is held until the transport lets
// go of it), and a pull's values land in the caller's array (over rdma the
// server writes them there; over tcp they are copied from the received
// frame, once, and counted in bytes_copied). geops/__init__.py adds torch
// tensors (through their NumPy view of the same storage) and the
// module-level functions.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/base/buffer.h"
#include "core/base/config.h"
#include "core/base/log.h"
#include "core/kv/kv_worker_core.h"
#include "core/kv/partition.h"
#include "core/node/wan_policy.h"
#include "core/node/worker_node.h"

namespace py = pybind11;

namespace geops::python {
namespace {

// Raised for a bad DMLC_*/GEOPS_* value (geops.ConfigError, a ValueError).
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Raised for a failed request or a failed cluster (geops.GeopsError).
struct GeopsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Check(const absl::Status& s) {
  if (!s.ok()) throw GeopsError(std::string(s.message()));
}

// Python objects whose memory a Buffer viewed, released by the transport
// on its own threads: their references are dropped later, under the GIL,
// by the next call into the module (never from a transport thread, which
// must not wait for the interpreter).
class Releaser {
 public:
  void Defer(PyObject* o) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(o);
  }
  // REQUIRES: the GIL.
  void Drain() {
    std::vector<PyObject*> now;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now.swap(pending_);
    }
    for (PyObject* o : now) Py_DECREF(o);
  }

 private:
  std::mutex mu_;
  std::vector<PyObject*> pending_;
};
Releaser& Releases() {
  static auto* r = new Releaser();  // outlives every Buffer, even at exit
  return *r;
}

// A view of a C-contiguous array of one of geops's dtypes.
struct ArrayView {
  Buffer buffer;
  DType dtype = DType::kNone;
  size_t elems = 0;
  size_t itemsize = 0;
};

ArrayView View(const py::object& obj, const char* what, bool writable) {
  if (!PyObject_CheckBuffer(obj.ptr())) {
    throw py::type_error(absl::StrFormat(
        "%s: expected a NumPy array or a CPU torch tensor, got %s", what,
        std::string(py::str(py::type::of(obj).attr("__name__")))));
  }
  py::buffer_info info;
  try {
    info = py::reinterpret_borrow<py::buffer>(obj).request(writable);
  } catch (py::error_already_set& e) {
    throw py::value_error(absl::StrFormat("%s: %s%s", what, e.what(),
                                          writable ? " (pulled values need a writable array)" : ""));
  }
  ArrayView v;
  const char kind = info.format.empty() ? '?' : info.format.back();
  if (info.itemsize == 4 && kind == 'f') v.dtype = DType::kFloat32;
  else if (info.itemsize == 8 && kind == 'd') v.dtype = DType::kFloat64;
  else if (info.itemsize == 4 && (kind == 'i' || kind == 'l')) v.dtype = DType::kInt32;
  else if (info.itemsize == 8 && (kind == 'l' || kind == 'q')) v.dtype = DType::kInt64;
  else {
    throw py::type_error(absl::StrFormat(
        "%s: geops values are float32, float64, int32 or int64; got format '%s' (%d bytes)",
        what, info.format, info.itemsize));
  }
  ssize_t expect = info.itemsize;
  for (ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[d] > 1 && info.strides[d] != expect) {
      throw py::value_error(absl::StrFormat(
          "%s: the array is not C-contiguous; geops sends and fills arrays in place, so pass "
          "a contiguous one (numpy.ascontiguousarray, tensor.contiguous())", what));
    }
    expect *= info.shape[d];
  }
  v.elems = static_cast<size_t>(info.size);
  v.itemsize = static_cast<size_t>(info.itemsize);
  // The Buffer holds a reference to the object until the transport is done.
  PyObject* owner = obj.ptr();
  Py_INCREF(owner);
  v.buffer = Buffer::Wrap(info.ptr, v.elems * info.itemsize,
                          [owner] { Releases().Defer(owner); });
  return v;
}

std::optional<std::string> Env(const EnvLookup& env, std::string_view name) {
  auto v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

class Worker {
 public:
  Worker() {
    EnvLookup env = ProcessEnv();
    auto c = ParseConfig(env);
    if (!c.ok()) throw ConfigError(std::string(c.status().message()));
    config_ = *c;
    if (config_.role != Role::kWorker || config_.in_global_tier()) {
      throw ConfigError(absl::StrFormat(
          "DMLC_ROLE=\"%s\": a Python program joins as a worker (DMLC_ROLE=worker); run "
          "schedulers and servers with the geops executable",
          Env(env, "DMLC_ROLE").value_or(Env(env, "DMLC_ROLE_GLOBAL").value_or(""))));
    }
    if (auto s = Env(env, "GEOPS_SHARD")) {
      std::vector<std::string> parts = absl::StrSplit(*s, '/');
      int i = 0, n = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &i) || !absl::SimpleAtoi(parts[1], &n) ||
          n < 1 || i < 0 || i >= n) {
        throw ConfigError(absl::StrFormat(
            "GEOPS_SHARD=\"%s\": expected i/N with 0 <= i < N (this worker's share of the data)",
            *s));
      }
      shard_ = {i, n};
    }
    log::SetVerbosity(config_.verbose);
    for (const auto& w : config_.warnings) log::Warn("%s", w);

    auto node = WorkerNode::Create(config_);
    if (!node.ok()) throw ConfigError(std::string(node.status().message()));
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = (*node)->Start();
    }
    if (!s.ok()) {
      {
        py::gil_scoped_release nogil;  // its destructor joins the tier's threads
        node->reset();
      }
      throw GeopsError(std::string(s.message()));
    }
    node_ = std::move(*node);
    trains_ = node_->trains();
  }

  ~Worker() {
    if (node_) {
      py::gil_scoped_release nogil;
      node_->tier().Abort("the Python worker was destroyed without shutdown()");
      node_.reset();
    }
  }

  int Push(const std::vector<uint64_t>& keys, const py::object& values,
           const std::optional<std::vector<int64_t>>& lens) {
    return Submit(keys, &values, nullptr, lens, msgflag::kPush);
  }
  int Pull(const std::vector<uint64_t>& keys, const py::object& out,
           const std::optional<std::vector<int64_t>>& lens) {
    return Submit(keys, nullptr, &out, lens, msgflag::kPull);
  }
  int PushPull(const std::vector<uint64_t>& keys, const py::object& values, const py::object& out,
               const std::optional<std::vector<int64_t>>& lens) {
    return Submit(keys, &values, &out, lens, msgflag::kPush | msgflag::kPull);
  }
  int Init(const std::vector<uint64_t>& keys, const py::object& values,
           const std::optional<std::vector<int64_t>>& lens) {
    return Submit(keys, &values, nullptr, lens, msgflag::kPush | msgflag::kInit);
  }

  int SetRule(const std::string& rule, double lr, int average_over, py::object wan_dtype,
              py::object wan_topk, py::object wan_topk_min, py::object wan_sync,
              py::object wan_staleness) {
    Live();
    RuleSpec r;
    if (rule == "sum") {
      r.rule = UpdateRule::kSum;
    } else if (rule == "sgd") {
      if (!(lr > 0)) throw py::value_error("rule \"sgd\" needs lr > 0");
      r.rule = UpdateRule::kSgd;
      r.learning_rate = lr;
    } else if (rule == "average") {
      r.rule = UpdateRule::kAverage;
      r.average_over = static_cast<uint32_t>(average_over > 0 ? average_over : num_workers());
    } else {
      throw py::value_error(absl::StrFormat("rule \"%s\": expected sum, sgd or average", rule));
    }
    // The policy of this process's variables (GEOPS_WAN_*), then the
    // arguments given here on top.
    r = WithWanPolicy(r, config_);
    bool any = !wan_dtype.is_none() || !wan_topk.is_none() || !wan_topk_min.is_none() ||
               !wan_sync.is_none() || !wan_staleness.is_none();
    if (any) r.policy_set = true;
    if (!wan_dtype.is_none()) {
      std::string d = py::str(wan_dtype);
      if (d == "fp16") r.wan_dtype = DType::kFloat16;
      else if (d == "bf16") r.wan_dtype = DType::kBFloat16;
      else if (d == "fp32" || d == "float32") r.wan_dtype = DType::kNone;
      else throw py::value_error(absl::StrFormat("wan_dtype \"%s\": expected fp16, bf16 or fp32", d));
    }
    if (!wan_topk.is_none()) {
      double k = wan_topk.cast<double>();
      if (!(k >= 0 && k <= 1)) throw py::value_error("wan_topk: a fraction in [0, 1] (0: dense)");
      r.wan_topk = k;
    }
    if (!wan_topk_min.is_none()) r.wan_topk_min_elems = wan_topk_min.cast<uint64_t>();
    if (!wan_sync.is_none()) {
      std::string s = py::str(wan_sync);
      if (s != "mixed" && s != "sync") {
        throw py::value_error(absl::StrFormat("wan_sync \"%s\": expected sync or mixed", s));
      }
      r.wan_mixed = s == "mixed";
    }
    if (!wan_staleness.is_none()) r.wan_staleness = wan_staleness.cast<uint32_t>();
    return node_->kv().SetRule(r);
  }

  void Wait(int ts) {
    Releases().Drain();
    Live();
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = node_->kv().Wait(ts);
    }
    Releases().Drain();
    Check(s);
  }

  // Leaves the cluster in order (after every worker of the tier is done).
  void Shutdown(bool print_stats) {
    if (!node_) return;
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = node_->Finalize();
    }
    Close(print_stats);
    Check(s);
  }
  // Stops the whole cluster, naming `reason` in every process's log.
  void Abort(const std::string& reason, bool print_stats) {
    if (!node_) return;
    {
      py::gil_scoped_release nogil;
      node_->Abort(reason);
    }
    Close(print_stats);
  }

  // Keeps `obj` registered with the transport (RDMA: pinned, with its keys)
  // until unregister() or shutdown; later requests on it, or on a part of
  // it, reuse that registration instead of registering per request. It
  // holds a reference to `obj`. A no-op for the transport over tcp.
  void Register(const py::object& obj) {
    Releases().Drain();
    Live();
    ArrayView v = View(obj, "array", false);
    if (lands_in_place()) Check(node_->kv().Register(v.buffer));
    std::lock_guard<std::mutex> lock(mu_);
    registered_[reinterpret_cast<uintptr_t>(v.buffer.data())] = v.buffer;
  }
  void Unregister(const py::object& obj) {
    ArrayView v = View(obj, "array", false);
    std::lock_guard<std::mutex> lock(mu_);
    registered_.erase(reinterpret_cast<uintptr_t>(v.buffer.data()));
  }

  int rank() const { return node_ ? node_->tier().my_rank() : -1; }
  bool is_master() const { return config_.master_worker; }
  bool trains() const { return trains_; }
  int num_workers() const {
    if (config_.num_all_workers > 0) return config_.num_all_workers;
    int n = 0;
    if (node_) {
      for (const auto& w : node_->tier().Members(Role::kWorker)) n += w.trains ? 1 : 0;
    }
    return n;
  }
  py::object shard() const {
    if (!shard_) return py::none();
    return py::make_tuple(shard_->first, shard_->second);
  }
  std::string party() const { return config_.party; }
  // The rdma transport writes pulled values into registered destinations
  // (the van decides, as for the C++ trainer).
  bool lands_in_place() const { return node_ && config_.local_van == VanType::kRdma; }
  // Copies into the caller's arrays: the client's (small values, eager
  // rdma messages) and the tcp transport's (large values moved out of
  // ZeroMQ's frames as they arrive).
  uint64_t bytes_copied() const {
    if (!node_) return 0;
    return node_->kv().client().bytes_copied() + node_->tier().stats().bytes_staged.load();
  }
  bool running() const { return node_ != nullptr; }

 private:
  // `v` as a view of a register()ed Buffer that covers it, when one does.
  ArrayView Registered(ArrayView v) {
    const auto p = reinterpret_cast<uintptr_t>(v.buffer.data());
    std::lock_guard<std::mutex> lock(mu_);
    auto it = registered_.upper_bound(p);
    if (it == registered_.begin()) return v;
    --it;
    const Buffer& r = it->second;
    if (p + v.buffer.size() <= it->first + r.size()) {
      v.buffer = r.Slice(p - it->first, v.buffer.size());
    }
    return v;
  }

  void Live() const {
    if (!node_) throw GeopsError("this worker has left the cluster (shutdown() or abort())");
  }

  void Close(bool print_stats) {
    py::gil_scoped_release nogil;
    if (print_stats) node_->PrintStats();
    node_.reset();
    std::lock_guard<std::mutex> lock(mu_);
    registered_.clear();
  }

  int Submit(const std::vector<uint64_t>& keys, const py::object* values,
             const py::object* out, const std::optional<std::vector<int64_t>>& lens,
             uint32_t flags) {
    Releases().Drain();
    Live();
    KVWorkerCore::Call call;
    call.keys.assign(keys.begin(), keys.end());
    call.flags = flags;
    if (lens) call.lens = *lens;
    if (values) {
      ArrayView v = Registered(View(*values, "values", false));
      call.dtype = v.dtype;
      call.values = v.buffer;
    }
    if (out) {
      ArrayView o = Registered(View(*out, "out", true));
      if (values && o.dtype != call.dtype) {
        throw py::type_error(absl::StrFormat("out is %s but values are %s: use one dtype",
                                             DTypeName(o.dtype), DTypeName(call.dtype)));
      }
      call.dtype = o.dtype;
      call.dest = o.buffer;
    }
    // Registered before anything is sent: a refused registration (RDMA
    // memlock) must not leave this worker a round ahead.
    std::vector<Buffer> registered;
    if (lands_in_place()) {
      if (values) registered.push_back(call.values);
      if (out) registered.push_back(*call.dest);
    }
    auto prepared = KVWorkerCore::Prepare(std::move(call));
    if (!prepared.ok()) throw py::value_error(std::string(prepared.status().message()));
    for (const Buffer& b : registered) Check(node_->kv().Register(b));
    py::gil_scoped_release nogil;
    return node_->kv().Submit(std::move(*prepared));
  }

  Config config_;
  std::optional<std::pair<int, int>> shard_;
  bool trains_ = false;
  std::unique_ptr<WorkerNode> node_;  // null once the worker left the cluster
  std::mutex mu_;
  std::map<uintptr_t, Buffer> registered_;  // by start address; guarded by mu_
};

}  // namespace
}  // namespace geops::python

PYBIND11_MODULE(_geops, m) {
  using geops::python::Worker;
  m.doc() = "geops worker API (see the geops package)";
  py::register_exception<geops::python::ConfigError>(m, "ConfigError", PyExc_ValueError);
  py::register_exception<geops::python::GeopsError>(m, "GeopsError", PyExc_RuntimeError);
  m.def("config_check", [] {
    auto c = geops::ParseConfig(geops::ProcessEnv());
    if (!c.ok()) throw geops::python::ConfigError(std::string(c.status().message()));
    return c->Describe();
  }, "Parses the DMLC_* environment as geops does; raises ConfigError naming the variable.");
  m.def("spread_key", [](uint64_t index, uint64_t count) {
    if (count == 0 || index >= count) throw py::value_error("spread_key: expected index < count");
    return geops::SpreadKey(index, count);
  }, py::arg("index"), py::arg("count"),
     "Key number `index` of `count`, spread so that every server owns a share (in order).");
  py::class_<Worker>(m, "Worker")
      .def(py::init<>())
      .def("push", &Worker::Push, py::arg("keys"), py::arg("values"), py::arg("lens") = py::none())
      .def("pull", &Worker::Pull, py::arg("keys"), py::arg("out"), py::arg("lens") = py::none())
      .def("push_pull", &Worker::PushPull, py::arg("keys"), py::arg("values"), py::arg("out"),
           py::arg("lens") = py::none())
      .def("init", &Worker::Init, py::arg("keys"), py::arg("values"), py::arg("lens") = py::none())
      .def("set_rule", &Worker::SetRule, py::arg("rule") = "sum", py::arg("lr") = 0.0,
           py::arg("average_over") = 0, py::arg("wan_dtype") = py::none(),
           py::arg("wan_topk") = py::none(), py::arg("wan_topk_min") = py::none(),
           py::arg("wan_sync") = py::none(), py::arg("wan_staleness") = py::none())
      .def("wait", &Worker::Wait, py::arg("ts"))
      .def("register", &Worker::Register, py::arg("array"))
      .def("unregister", &Worker::Unregister, py::arg("array"))
      .def("shutdown", &Worker::Shutdown, py::arg("print_stats") = true)
      .def("abort", &Worker::Abort, py::arg("reason"), py::arg("print_stats") = true)
      .def_property_readonly("rank", &Worker::rank)
      .def_property_readonly("is_master", &Worker::is_master)
      .def_property_readonly("trains", &Worker::trains)
      .def_property_readonly("num_workers", &Worker::num_workers)
      .def_property_readonly("shard", &Worker::shard)
      .def_property_readonly("party", &Worker::party)
      .def_property_readonly("lands_in_place", &Worker::lands_in_place)
      .def_property_readonly("bytes_copied", &Worker::bytes_copied)
      .def_property_readonly("running", &Worker::running);
}
