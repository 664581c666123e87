// The training pass's autograd node in C++ (optional; see _cxx.py).
//
// The C kernels (_kernels.c) compute the pass either way; this module only replaces
// the Python autograd.Function around them: the forward builds a C++ node that saves
// x, gamma and beta and the float64 state vector, and the node's backward calls the
// C backward pass
//
//     dx = (dy - sum(dy)/n - (x - mean) * sum(dy * (x - mean)) / (n (var + eps))) * k
//
// directly from the autograd engine, without taking the GIL. A double backward
// (create_graph=True) calls back into Python, which differentiates the composite
// formula, exactly as the Python node does. The kernels are reached through the
// function addresses of the already loaded C library, so nothing is compiled twice.

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <array>
#include <optional>

namespace py = pybind11;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

typedef int (*forward_fn)(const void *, void *, const int64_t *, const int64_t *, int64_t,
                          const void *, const void *, double, void *, void *, double, double,
                          double, const void *, const void *, double *, void *, void *, void *,
                          double, double, int, int, int);
typedef int (*backward_fn)(const void *, const void *, void *, const int64_t *, const int64_t *,
                           int64_t, const void *, const double *, void *, void *, int);

// What the passes need of one input layout and dtype (made once per layout in Python).
struct Kernels {
    forward_fn forward;
    backward_fn backward;
    std::array<int64_t, 5> dims, strides;
    int64_t params;    // parameter entries P
    int64_t kept;      // float64 words of per-channel state a backward reads
    at::ScalarType pdt;  // the parameters' dtype
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

static PyObject *double_backward = nullptr;  // Python: the composite formula's gradient

static void *address(const std::optional<at::Tensor> &t) {
    return t && t->defined() ? t->data_ptr() : nullptr;
}

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

struct TrainBackward : public Node {
    Kernels kernels;
    int threads = 1;
    SavedVariable x, gamma, beta;
    at::Tensor state;
    PyRef plan;

    std::string name() const override { return "BatchNormTrainBackward"; }

    void release_variables() override {
        x.reset_data();
        gamma.reset_data();
        beta.reset_data();
        state.reset();
    }

    variable_list apply(variable_list &&grads) override {
        auto self = Nodes<TrainBackward>::self(this);
        at::Tensor xv = x.unpack(self), gv = gamma.unpack(self), bv = beta.unpack(self);
        const at::Tensor &dy = grads[0];
        if (!dy.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
        const bool need_x = should_compute_output(0);
        const bool need_g = gv.defined() && should_compute_output(1);
        const bool need_b = bv.defined() && should_compute_output(2);
        if (at::GradMode::is_enabled()) {  // double backward: differentiate in Python
            py::gil_scoped_acquire gil;
            py::handle fn(double_backward);
            py::object none = py::none();
            py::object g = gv.defined() ? py::cast(gv) : none;
            py::object b = bv.defined() ? py::cast(bv) : none;
            py::tuple out =
                fn(py::handle(plan.object), dy, xv, g, b, state, need_x, need_g, need_b);
            variable_list result(3);
            for (size_t i = 0; i < 3; ++i)
                if (!out[i].is_none()) result[i] = out[i].cast<at::Tensor>();
            return result;
        }
        at::Tensor d = dy.strides() == xv.strides() ? dy : at::empty_like(xv).copy_(dy);
        const auto popts = at::TensorOptions().dtype(kernels.pdt);
        at::Tensor dx = need_x ? at::empty_like(xv) : at::Tensor();
        at::Tensor dg = need_g ? at::empty(gv.sizes(), popts) : at::Tensor();
        at::Tensor db = need_b ? at::empty(bv.sizes(), popts) : at::Tensor();
        at::Tensor g = gv.defined() ? gv.to(kernels.pdt).contiguous() : at::Tensor();
        kernels.backward(d.data_ptr(), xv.data_ptr(), dx.defined() ? dx.data_ptr() : nullptr,
                         kernels.dims.data(), kernels.strides.data(), kernels.params,
                         g.defined() ? g.data_ptr() : nullptr, state.data_ptr<double>(),
                         dg.defined() ? dg.data_ptr() : nullptr,
                         db.defined() ? db.data_ptr() : nullptr, threads);
        return {dx, dg, db};
    }
};

// y and the state vector of a training pass, with y's gradient edge on a C++ node; None
// when an input carries a forward-mode tangent (the caller then takes the Python node,
// which raises PyTorch's own error for that).
static py::object train(const Kernels &k, py::object plan, const at::Tensor &x,
                        const std::optional<at::Tensor> &gamma,
                        const std::optional<at::Tensor> &beta, double eps,
                        const std::optional<at::Tensor> &renorm_mean,
                        const std::optional<at::Tensor> &renorm_stddev, double rmin,
                        double rmax, double dmax, const std::optional<at::Tensor> &adj_scale,
                        const std::optional<at::Tensor> &adj_bias,
                        const std::optional<at::Tensor> &moving_mean,
                        const std::optional<at::Tensor> &moving_var,
                        const std::optional<at::Tensor> &moving_stddev, double momentum,
                        double renorm_momentum, int bessel, int threads) {
    const at::Tensor g_in = gamma.value_or(at::Tensor()), b_in = beta.value_or(at::Tensor());
    if (torch::autograd::isFwGradDefined(x) || torch::autograd::isFwGradDefined(gamma) ||
        torch::autograd::isFwGradDefined(beta))
        return py::none();
    at::Tensor y, state;
    {
        at::NoGradGuard no_grad;
        const at::Tensor g = g_in.defined() ? g_in.to(k.pdt).contiguous() : at::Tensor();
        const at::Tensor b = b_in.defined() ? b_in.to(k.pdt).contiguous() : at::Tensor();
        y = at::empty_like(x);
        state = at::empty({4 * k.params + k.kept}, at::TensorOptions().dtype(at::kDouble));
        py::gil_scoped_release nogil;
        k.forward(x.data_ptr(), y.data_ptr(), k.dims.data(), k.strides.data(), k.params,
                  g.defined() ? g.data_ptr() : nullptr, b.defined() ? b.data_ptr() : nullptr,
                  eps, address(renorm_mean), address(renorm_stddev), rmin, rmax, dmax,
                  address(adj_scale), address(adj_bias), state.data_ptr<double>(),
                  address(moving_mean), address(moving_var), address(moving_stddev), momentum,
                  renorm_momentum, bessel, 1, threads);
    }
    auto node = Nodes<TrainBackward>::make();
    node->set_next_edges(torch::autograd::collect_next_edges(x, g_in, b_in));
    node->kernels = k;
    node->threads = threads;
    node->x = SavedVariable(x, false);
    node->gamma = SavedVariable(g_in, false);
    node->beta = SavedVariable(b_in, false);
    node->state = state;
    node->plan.object = plan.release().ptr();
    torch::autograd::set_history(y, node);
    return py::make_tuple(y, state);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "batchnorm's training node in C++";
    py::class_<Kernels>(m, "Kernels")
        .def(py::init([](int64_t forward, int64_t backward, std::array<int64_t, 5> dims,
                         std::array<int64_t, 5> strides, int64_t params, int64_t kept,
                         bool double_params) {
            return Kernels{reinterpret_cast<forward_fn>(forward),
                           reinterpret_cast<backward_fn>(backward),
                           dims,
                           strides,
                           params,
                           kept,
                           double_params ? at::kDouble : at::kFloat};
        }));
    m.def("train", &train);
    m.def("set_double_backward", [](py::object fn) {
        Py_XDECREF(double_backward);
        double_backward = fn.release().ptr();
    });
    m.def("abi_version", []() { return 1; });
}
