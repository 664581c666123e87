// The C passes' autograd nodes in C++ (optional; see cxx.py).
//
// The C kernels (kernels.c) compute the passes either way; this module only replaces
// the Python autograd.Functions around them (passes.NativeTrainNorm and
// NativeInferNorm). A forward builds a C++ node that saves x, gamma and beta (and the
// training pass's float64 state vector, or the inference pass's statistics), and the
// node's backward calls the C backward pass from the autograd engine without the GIL:
//
//   training:  dx = (dy - sum(dy)/n - (x - mean) * sum(dy (x - mean)) / (n (var + eps))) k
//   inference: dx = dy * gamma / sqrt(var + eps)
//
// with dgamma and dbeta from the same sweep. A double backward (create_graph=True)
// calls back into Python, which differentiates the composite formula exactly as the
// Python nodes do. The kernels are reached through the function addresses of the C
// library Python already loaded, so nothing is compiled twice.

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/utils/pybind.h>

#include <array>
#include <mutex>
#include <optional>
#include <vector>

namespace py = pybind11;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;

// The exported C passes (kernels.c; argument letters in build.SIGNATURES).
typedef int (*train_forward_fn)(const void *, void *, const int64_t *, const int64_t *, int64_t,
                                const void *, const void *, double, void *, void *, double,
                                double, double, const void *, const void *, double *, void *,
                                void *, void *, double, double, int, int, int);
typedef int (*train_backward_fn)(const void *, const void *, void *, const int64_t *,
                                 const int64_t *, int64_t, const void *, const double *, void *,
                                 void *, int);
typedef int (*infer_forward_fn)(const void *, void *, const int64_t *, const int64_t *, int64_t,
                                const void *, const void *, const void *, const void *, double,
                                int);
typedef int (*infer_backward_fn)(const void *, const void *, void *, const int64_t *,
                                 const int64_t *, int64_t, const void *, const void *,
                                 const void *, double, void *, void *, int);

// One layout's passes (made once per layout and dtype in Python): a forward and a
// backward function, the kernels' 5-D view, P parameter entries, the float64 words of
// per-channel state a training backward reads, and the parameters' dtype.
struct Kernels {
    void *forward, *backward;
    std::array<int64_t, 5> dims, strides;
    int64_t params, kept;
    at::ScalarType pdt;
};

// How this PyTorch holds autograd nodes: std::shared_ptr before 2.13, c10::intrusive_ptr
// since. The names used for one kind depend on N, so only the matching one is compiled.
using NodeRef = decltype(std::declval<torch::autograd::Edge &>().function);
template <class N, class R = NodeRef>
struct Nodes;
template <class N>
struct Nodes<N, std::shared_ptr<Node>> {
    static std::shared_ptr<N> make() {
        return std::shared_ptr<N>(new N(), [](N *node) { deleteNode(node); });
    }
    static std::shared_ptr<Node> self(N *node) { return node->shared_from_this(); }
};
template <class N>
struct Nodes<N, c10::intrusive_ptr<Node>> {
    static c10::intrusive_ptr<N> make() { return c10::make_intrusive<N>(); }
    static c10::intrusive_ptr<Node> self(N *node) {
        return c10::intrusive_ptr<Node>::reclaim_copy(node);
    }
};

// Python: the composite formulas' gradients (passes.double_backward, infer.infer_double_backward).
static PyObject *train_double_backward = nullptr, *affine_double_backward = nullptr;

static void *address(const at::Tensor &t) { return t.defined() ? t.data_ptr() : nullptr; }

// t as a contiguous tensor of the parameters' dtype (itself when it is one already);
// undefined stays undefined, as _layout.vector does with None.
static at::Tensor as_params(const at::Tensor &t, at::ScalarType pdt) {
    return t.defined() ? t.to(pdt).contiguous() : at::Tensor();
}

static void *address(const OptionalTensor &t) { return t ? address(*t) : nullptr; }

// A Python object held by a node, released under the GIL whatever thread frees the node.
struct PyRef {
    PyObject *object = nullptr;
    PyRef() = default;
    PyRef(const PyRef &) = delete;
    PyRef &operator=(const PyRef &) = delete;
    ~PyRef() {
        if (object != nullptr && Py_IsInitialized()) {
            py::gil_scoped_acquire gil;
            Py_DECREF(object);
        }
    }
};

// What both nodes save and do: inputs x, gamma, beta (either may be absent), x's strides
// at the forward, the layout's kernels, the thread count and the Python plan (for a
// double backward). `lock` guards the saved values: two threads may run backward on the
// same graph, one of them releasing what the other still reads.
struct PassBackward : public Node {
    Kernels kernels;
    int threads = 1;
    SavedVariable x, gamma, beta;
    std::vector<int64_t> x_strides;
    PyRef plan;
    std::mutex lock;

    void release_variables() override {
        std::lock_guard<std::mutex> guard(lock);
        release_saved();
    }

  protected:
    virtual void release_saved() {
        x.reset_data();
        gamma.reset_data();
        beta.reset_data();
    }

    struct Inputs {
        at::Tensor x, gamma, beta;
        bool need_x, need_gamma, need_beta;
    };

    template <class N>
    Inputs unpack(N *self) {
        auto owner = Nodes<N>::self(self);
        Inputs in{x.unpack(owner), gamma.unpack(owner), beta.unpack(owner), false, false, false};
        in.need_x = should_compute_output(0);
        in.need_gamma = in.gamma.defined() && should_compute_output(1);
        in.need_beta = in.beta.defined() && should_compute_output(2);
        return in;
    }

    // fn(plan, dy, x, gamma, beta, *extra, need_x, need_gamma, need_beta) in Python.
    variable_list in_python(PyObject *fn, const at::Tensor &dy, const Inputs &in,
                            std::initializer_list<at::Tensor> extra) {
        py::gil_scoped_acquire gil;
        py::list args;
        args.append(py::handle(plan.object));
        for (const at::Tensor &t : {dy, in.x, in.gamma, in.beta})
            args.append(t.defined() ? py::cast(t) : py::none());
        for (const at::Tensor &t : extra) args.append(py::cast(t));
        args.append(in.need_x);
        args.append(in.need_gamma);
        args.append(in.need_beta);
        py::tuple out = py::handle(fn)(*args);
        variable_list result(3);
        for (size_t i = 0; i < 3; ++i)
            if (!out[i].is_none()) result[i] = out[i].cast<at::Tensor>();
        return result;
    }

    // x as the kernels read it: with its forward strides (a saved-tensor hook may have
    // returned another layout).
    void restride(Inputs &in) const {
        if (in.x.strides() != at::IntArrayRef(x_strides))
            in.x = at::empty_strided(in.x.sizes(), x_strides, in.x.options()).copy_(in.x);
    }

    // dy with x's strides (what the kernels expect), and the gradient buffers wanted.
    std::array<at::Tensor, 4> buffers(const at::Tensor &dy, const Inputs &in) const {
        const auto popts = at::TensorOptions().dtype(kernels.pdt);
        return {dy.strides() == in.x.strides() ? dy : at::empty_like(in.x).copy_(dy),
                in.need_x ? at::empty_like(in.x) : at::Tensor(),
                in.need_gamma ? at::empty(in.gamma.sizes(), popts) : at::Tensor(),
                in.need_beta ? at::empty(in.beta.sizes(), popts) : at::Tensor()};
    }
};

struct TrainBackward : public PassBackward {
    at::Tensor state;  // per parameter: mean, variance, slope, intercept; per channel: mean, inv

    std::string name() const override { return "BatchNormTrainBackward"; }

  protected:
    void release_saved() override {
        PassBackward::release_saved();
        state.reset();
    }

  public:
    variable_list apply(variable_list &&grads) override {
        Inputs in;
        at::Tensor st;
        {
            std::lock_guard<std::mutex> guard(lock);
            in = unpack(this);
            st = state;
        }
        const at::Tensor &dy = grads[0];
        if (!dy.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
        if (at::GradMode::is_enabled()) return in_python(train_double_backward, dy, in, {st});
        restride(in);
        auto [d, dx, dg, db] = buffers(dy, in);
        const at::Tensor g = as_params(in.gamma, kernels.pdt);
        reinterpret_cast<train_backward_fn>(kernels.backward)(
            d.data_ptr(), in.x.data_ptr(), address(dx), kernels.dims.data(),
            kernels.strides.data(), kernels.params, address(g), st.data_ptr<double>(),
            address(dg), address(db), threads);
        return {dx, dg, db};
    }
};

struct AffineBackward : public PassBackward {
    SavedVariable mean, var;
    double eps = 0;

    std::string name() const override { return "BatchNormAffineBackward"; }

  protected:
    void release_saved() override {
        PassBackward::release_saved();
        mean.reset_data();
        var.reset_data();
    }

  public:
    variable_list apply(variable_list &&grads) override {
        Inputs in;
        at::Tensor m, v;
        {
            std::lock_guard<std::mutex> guard(lock);
            in = unpack(this);
            auto owner = Nodes<AffineBackward>::self(this);
            m = mean.unpack(owner);
            v = var.unpack(owner);
        }
        const at::Tensor &dy = grads[0];
        if (!dy.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
        if (at::GradMode::is_enabled()) return in_python(affine_double_backward, dy, in, {m, v});
        restride(in);
        auto [d, dx, dg, db] = buffers(dy, in);
        const at::Tensor mv = as_params(m, kernels.pdt), vv = as_params(v, kernels.pdt);
        const at::Tensor g = as_params(in.gamma, kernels.pdt);
        reinterpret_cast<infer_backward_fn>(kernels.backward)(
            d.data_ptr(), in.x.data_ptr(), address(dx), kernels.dims.data(),
            kernels.strides.data(), kernels.params, address(mv), address(vv), address(g), eps,
            address(dg), address(db), threads);
        return {dx, dg, db};
    }
};

static bool tangent(const at::Tensor &x, const OptionalTensor &gamma, const OptionalTensor &beta) {
    return torch::autograd::isFwGradDefined(x) || torch::autograd::isFwGradDefined(gamma) ||
           torch::autograd::isFwGradDefined(beta);
}

// Saves the common inputs on a new node and makes it y's gradient function.
template <class P>
static void connect(const P &node, const Kernels &k, int threads, py::object plan,
                    const at::Tensor &x, const at::Tensor &gamma, const at::Tensor &beta,
                    const at::Tensor &y) {
    node->set_next_edges(torch::autograd::collect_next_edges(x, gamma, beta));
    node->kernels = k;
    node->threads = threads;
    node->x = SavedVariable(x, false);
    node->x_strides = x.strides().vec();
    node->gamma = SavedVariable(gamma, false);
    node->beta = SavedVariable(beta, false);
    node->plan.object = plan.release().ptr();
    torch::autograd::set_history(y, node);
}

// y and the state vector of a training pass, y's gradient function a TrainBackward
// when `record` (autograd records the pass; without it the state holds no per-channel
// part and no node is made); None when an input carries a forward-mode tangent (the
// caller then takes the Python node, which raises PyTorch's own error for that).
static py::object train(const Kernels &k, py::object plan, const at::Tensor &x,
                        const OptionalTensor &gamma, const OptionalTensor &beta, double eps,
                        const OptionalTensor &renorm_mean, const OptionalTensor &renorm_stddev,
                        double rmin, double rmax, double dmax, const OptionalTensor &adj_scale,
                        const OptionalTensor &adj_bias, const OptionalTensor &moving_mean,
                        const OptionalTensor &moving_var, const OptionalTensor &moving_stddev,
                        double momentum, double renorm_momentum, int bessel, int threads,
                        bool record) {
    if (tangent(x, gamma, beta)) return py::none();
    const at::Tensor g_in = gamma.value_or(at::Tensor()), b_in = beta.value_or(at::Tensor());
    at::Tensor y, state;
    {
        at::NoGradGuard no_grad;
        const at::Tensor g = as_params(g_in, k.pdt), b = as_params(b_in, k.pdt);
        y = at::empty_like(x);
        state = at::empty({4 * k.params + (record ? k.kept : 0)},
                          at::TensorOptions().dtype(at::kDouble));
        py::gil_scoped_release nogil;
        reinterpret_cast<train_forward_fn>(k.forward)(
            x.data_ptr(), y.data_ptr(), k.dims.data(), k.strides.data(), k.params, address(g),
            address(b), eps, address(renorm_mean), address(renorm_stddev), rmin, rmax, dmax,
            address(adj_scale), address(adj_bias), state.data_ptr<double>(),
            address(moving_mean), address(moving_var), address(moving_stddev), momentum,
            renorm_momentum, bessel, record ? 1 : 0, threads);
    }
    if (!record) return py::make_tuple(y, state);
    auto node = Nodes<TrainBackward>::make();
    node->state = state;
    connect(node, k, threads, std::move(plan), x, g_in, b_in, y);
    return py::make_tuple(y, state);
}

// y = (x - mean) * gamma / sqrt(var + eps) + beta through the C pass, without a node.
static at::Tensor infer_forward(const Kernels &k, const at::Tensor &x, const at::Tensor &gamma,
                                const at::Tensor &beta, const at::Tensor &mean,
                                const at::Tensor &var, double eps, int threads) {
    at::NoGradGuard no_grad;
    const at::Tensor m = as_params(mean, k.pdt), v = as_params(var, k.pdt);
    const at::Tensor g = as_params(gamma, k.pdt), b = as_params(beta, k.pdt);
    at::Tensor y = at::empty_like(x);
    py::gil_scoped_release nogil;
    reinterpret_cast<infer_forward_fn>(k.forward)(
        x.data_ptr(), y.data_ptr(), k.dims.data(), k.strides.data(), k.params, address(m),
        address(v), address(g), address(b), eps, threads);
    return y;
}

// y of an inference pass with given statistics, y's gradient function an
// AffineBackward when `record` (else no node is made); None when an input (statistics
// included) carries a forward-mode tangent.
static py::object affine(const Kernels &k, py::object plan, const at::Tensor &x,
                         const OptionalTensor &gamma, const OptionalTensor &beta,
                         const at::Tensor &mean, const at::Tensor &var, double eps,
                         int threads, bool record) {
    if (tangent(x, gamma, beta) || torch::autograd::isFwGradDefined(mean) ||
        torch::autograd::isFwGradDefined(var))
        return py::none();
    const at::Tensor g_in = gamma.value_or(at::Tensor()), b_in = beta.value_or(at::Tensor());
    const at::Tensor y = infer_forward(k, x, g_in, b_in, mean, var, eps, threads);
    if (!record) return py::cast(y);
    auto node = Nodes<AffineBackward>::make();
    node->eps = eps;
    // saved in the Python node's order (x, gamma, beta, mean, var): a non-reentrant
    // checkpoint matches recomputed tensors by position, whichever node recomputes
    connect(node, k, threads, std::move(plan), x, g_in, b_in, y);
    node->mean = SavedVariable(mean, false);
    node->var = SavedVariable(var, false);
    return py::cast(y);
}

#include "short_call.h"  // shortcall::call and shortcall::setup

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "batchnorm's autograd nodes in C++";
    py::class_<Kernels>(m, "Kernels")
        .def(py::init([](int64_t forward, int64_t backward, std::array<int64_t, 5> dims,
                         std::array<int64_t, 5> strides, int64_t params, int64_t kept,
                         bool double_params) {
            return Kernels{reinterpret_cast<void *>(forward),
                           reinterpret_cast<void *>(backward),
                           dims,
                           strides,
                           params,
                           kept,
                           double_params ? at::kDouble : at::kFloat};
        }));
    m.def("train", &train);
    m.def("affine", &affine);
    m.def("set_double_backward", [](py::object train_fn, py::object affine_fn) {
        Py_XDECREF(train_double_backward);
        Py_XDECREF(affine_double_backward);
        train_double_backward = train_fn.release().ptr();
        affine_double_backward = affine_fn.release().ptr();
    });
    m.def("short_infer", &shortcall::call);
    m.def("setup_short_infer", &shortcall::setup);
    m.def("abi_version", []() { return 6; });
}
