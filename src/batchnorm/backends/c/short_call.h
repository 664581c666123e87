#pragma once
// Included once by autograd.cpp, after Kernels and infer_forward, which it uses.
//
// The short call's inference pass, in C++: y for `layer(x, **kwargs)` when that call is
// an inference call autograd does not record, on a layout the layer already has an
// entry for (with this module's kernels), and none of what shortcut.call sends to the
// general path applies; else None, and the caller takes shortcut.call, which makes the
// same checks in Python and stays the reference. Everything is read on every call, as
// there. It exists because on large inputs the Python between two passes runs with cold
// caches (the pass before streamed the input through them), where shortcut.call's
// checks cost 20-30 us instead of 2.5 us warm; made here, they cost a fraction of that.
namespace shortcall {
PyObject *eligible = nullptr;  // shortcut._ELIGIBLE_TYPES: type -> bool
PyObject *torch_module = nullptr;  // torch.nn.modules.module (its global hook dicts)
PyObject *native = nullptr;        // batchnorm.backends.c.build (GRAIN)
enum Name {
    TRAINING, TRAINABLE, TRAINING_MODE, BUILT, SCOPE, ACTIVITY, SYNCHRONIZED, NUMERICS,
    HOOKS_F, HOOKS_FP, HOOKS_B, HOOKS_BP, G_HOOKS_F, G_HOOKS_FP, G_HOOKS_B, G_HOOKS_BP,
    COMPILED, MASK, VBS, GROUPING, ENTRIES, PARAMETERS, BUFFERS, GAMMA, BETA, MEAN, VARIANCE,
    PDT, KERNELS, LOSSES, EPSILON, GRAIN, COUNT
};
const char *spelled[COUNT] = {
    "training", "_trainable", "training", "built", "_scope", "activity_regularizer",
    "synchronized", "check_numerics", "_forward_hooks", "_forward_pre_hooks",
    "_backward_hooks", "_backward_pre_hooks", "_global_forward_hooks",
    "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks",
    "_compiled_call_impl", "_keras_mask", "virtual_batch_size", "ghost_grouping",
    "_short_entries", "_parameters", "_buffers", "gamma", "beta", "moving_mean",
    "moving_variance", "pdt", "kernels", "_call_losses", "epsilon", "GRAIN"};
PyObject *names[COUNT] = {};

// o.name as a new reference, or an empty object (error cleared) when it is missing.
py::object get(PyObject *o, Name name) {
    PyObject *r = PyObject_GetAttr(o, names[name]);
    if (r == nullptr) PyErr_Clear();
    return py::reinterpret_steal<py::object>(r);
}

// Whether o.name is an empty dict (hooks); false when it is anything else.
bool empty_dict(PyObject *o, Name name) {
    const py::object d = get(o, name);
    return d && PyDict_Check(d.ptr()) && PyDict_GET_SIZE(d.ptr()) == 0;
}

// d[name] (borrowed; None for a missing key or when d is not a dict).
PyObject *item(PyObject *d, Name name) {
    if (d == nullptr || !PyDict_Check(d)) return Py_None;
    PyObject *r = PyDict_GetItemWithError(d, names[name]);
    if (r == nullptr) PyErr_Clear();
    return r == nullptr ? Py_None : r;
}

// A variable the C pass reads in place: `pdt`, on the CPU, contiguous. None stays an
// undefined tensor; false for anything else.
bool in_place(PyObject *o, PyObject *pdt, at::Tensor &out) {
    if (o == Py_None) return true;
    if (!THPVariable_Check(o)) return false;
    out = THPVariable_Unpack(o);
    return reinterpret_cast<PyObject *>(torch::getTHPDtype(out.scalar_type())) == pdt &&
           out.has_storage() && out.device().is_cpu() && out.is_contiguous();
}

py::object call(py::handle layer_h, py::handle x_h, py::handle kwargs_h) {
    PyObject *layer = layer_h.ptr(), *kwargs = kwargs_h.ptr();
    if (eligible == nullptr || !THPVariable_Check(x_h.ptr()) || !PyDict_Check(kwargs))
        return py::none();
    PyObject *training = Py_None;
    const Py_ssize_t given = PyDict_GET_SIZE(kwargs);
    if (given > 1) return py::none();
    if (given == 1) {
        training = PyDict_GetItemWithError(kwargs, names[TRAINING]);
        if (training == nullptr) {
            PyErr_Clear();
            return py::none();
        }
    }
    if (training != Py_None && training != Py_True && training != Py_False) return py::none();
    const py::object trainable = get(layer, TRAINABLE), mode = get(layer, TRAINING_MODE);
    if (!trainable || !mode) return py::none();
    if (trainable.ptr() == Py_False) training = Py_False;
    else if (trainable.ptr() != Py_True) return py::none();
    else if (training == Py_None) training = mode.ptr();
    if (training != Py_False) return py::none();  // training calls: shortcut.call

    PyObject *known = PyDict_GetItemWithError(eligible, reinterpret_cast<PyObject *>(Py_TYPE(layer)));
    if (known != Py_True) {
        PyErr_Clear();
        return py::none();
    }
    const py::object built = get(layer, BUILT), scope = get(layer, SCOPE);
    const py::object activity = get(layer, ACTIVITY), synced = get(layer, SYNCHRONIZED);
    const py::object numerics = get(layer, NUMERICS), compiled = get(layer, COMPILED);
    if (built.ptr() != Py_True || !scope || scope.is_none() || !activity ||
        !activity.is_none() || synced.ptr() != Py_False || numerics.ptr() != Py_False ||
        !compiled || !compiled.is_none())
        return py::none();
    for (Name hooks : {HOOKS_F, HOOKS_FP, HOOKS_B, HOOKS_BP})
        if (!empty_dict(layer, hooks)) return py::none();
    for (Name hooks : {G_HOOKS_F, G_HOOKS_FP, G_HOOKS_B, G_HOOKS_BP})
        if (!empty_dict(torch_module, hooks)) return py::none();
    PyObject *mask = nullptr;
#if PY_VERSION_HEX >= 0x030D0000
    const int found = PyObject_GetOptionalAttr(x_h.ptr(), names[MASK], &mask);
#else
    const int found = _PyObject_LookupAttr(x_h.ptr(), names[MASK], &mask);
#endif
    const py::object mask_ref = py::reinterpret_steal<py::object>(mask);
    if (found < 0) {
        PyErr_Clear();
        return py::none();
    }
    if (found == 1 && mask != Py_None) return py::none();
    if (torch::jit::tracer::isTracing()) return py::none();

    const at::Tensor &x = THPVariable_Unpack(x_h.ptr());
    if (!x.has_storage()) return py::none();  // a functorch wrapper (vmap, grad), ...
    py::tuple shape(x.dim()), stride(x.dim());
    for (int64_t d = 0; d < x.dim(); ++d) {
        shape[d] = py::int_(x.size(d));
        stride[d] = py::int_(x.stride(d));
    }
    const py::object vbs = get(layer, VBS), grouping = get(layer, GROUPING);
    const py::object entries = get(layer, ENTRIES);
    if (!vbs || !grouping || !entries || !PyDict_Check(entries.ptr())) return py::none();
    const py::object dtype = py::reinterpret_borrow<py::object>(
        reinterpret_cast<PyObject *>(torch::getTHPDtype(x.scalar_type())));
    // shortcut.call's key: (shape, strides, dtype, on the CPU, training, vbs, grouping)
    const py::tuple key = py::make_tuple(
        shape, stride, dtype, py::bool_(x.is_cpu()), py::handle(Py_False), vbs, grouping);
    PyObject *entry = PyDict_GetItemWithError(entries.ptr(), key.ptr());
    if (entry == nullptr || entry == Py_None) {  // no entry yet, or the general path's layout
        PyErr_Clear();
        return py::none();
    }
    const py::object pdt = get(entry, PDT), kernels = get(entry, KERNELS);
    if (!pdt || !kernels || kernels.is_none()) return py::none();

    const py::object parameters = get(layer, PARAMETERS), buffers = get(layer, BUFFERS);
    PyObject *variables[4] = {item(parameters.ptr(), GAMMA), item(parameters.ptr(), BETA),
                              item(buffers.ptr(), MEAN), item(buffers.ptr(), VARIANCE)};
    if (variables[0] == Py_None) variables[0] = item(buffers.ptr(), GAMMA);
    if (variables[1] == Py_None) variables[1] = item(buffers.ptr(), BETA);
    if (variables[2] == Py_None || variables[3] == Py_None) return py::none();
    at::Tensor gamma, beta, mean, var;
    if (!in_place(variables[0], pdt.ptr(), gamma) || !in_place(variables[1], pdt.ptr(), beta) ||
        !in_place(variables[2], pdt.ptr(), mean) || !in_place(variables[3], pdt.ptr(), var))
        return py::none();
    const py::object losses = get(layer, LOSSES);
    if (!losses || PyObject_IsTrue(losses.ptr()) != 0) return py::none();  // shortcut.call clears
    const bool grad = at::GradMode::is_enabled() &&
                      (x.requires_grad() || (gamma.defined() && gamma.requires_grad()) ||
                       (beta.defined() && beta.requires_grad()));
    if (grad || torch::autograd::isFwGradDefined(x) || torch::autograd::isFwGradDefined(mean) ||
        torch::autograd::isFwGradDefined(var) ||
        (gamma.defined() && torch::autograd::isFwGradDefined(gamma)) ||
        (beta.defined() && torch::autograd::isFwGradDefined(beta)))
        return py::none();
    const py::object epsilon = get(layer, EPSILON), grain = get(native, GRAIN);
    if (!epsilon || !grain) return py::none();
    const double eps = PyFloat_AsDouble(epsilon.ptr());
    const long long min_numel = PyLong_AsLongLong(grain.ptr());
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return py::none();
    }
    const int threads = x.numel() < min_numel ? 1 : at::get_num_threads();
    const Kernels &k = kernels.cast<const Kernels &>();
    return py::cast(infer_forward(k, x, gamma, beta, mean, var, eps, threads));
}

void setup(py::object eligible_types, py::object torch_module_, py::object native_) {
    for (int i = 0; i < COUNT; ++i)
        if (names[i] == nullptr) names[i] = PyUnicode_InternFromString(spelled[i]);
    Py_XDECREF(eligible);
    Py_XDECREF(torch_module);
    Py_XDECREF(native);
    eligible = eligible_types.release().ptr();
    torch_module = torch_module_.release().ptr();
    native = native_.release().ptr();
}
}  // namespace shortcall
