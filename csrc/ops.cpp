// Registration of the medgrid operator library and the small pybind11 module medgrid._C.
//
// The op itself lives in the dispatcher (TORCH_LIBRARY) so torch.compile, opcheck and
// device dispatch see it; its kernels are registered in cpu/pgd_step.cpp (CPU) and
// cuda/pgd_step.cu (CUDA). `import medgrid._C` loads this shared library, which runs the
// registrations; the pybind11 module adds build_info() for diagnostics.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>  // torch ships pybind11; torch/extension.h would pull in all of libtorch's API
#include <torch/library.h>

#include <string>

#if __has_include(<torch/headeronly/version.h>)  // torch >= 2.9
#include <torch/headeronly/version.h>
#elif __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(medgrid, m) {
  m.def(
      "pgd_step(Tensor x_adv, Tensor grad, Tensor x, str norm, float eps, float alpha, "
      "bool targeted) -> Tensor");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef MEDGRID_WITH_CUDA
  info["has_cuda"] = true;
#else
  info["has_cuda"] = false;
#endif
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<int>(_OPENMP);
  info["omp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = 0;
  info["omp_max_threads"] = 1;
#endif
  // the thread count the CPU kernel uses (torch.set_num_threads governs it)
  info["torch_threads"] = at::get_num_threads();
#if defined(TORCH_VERSION_MAJOR) && defined(TORCH_VERSION_MINOR) && defined(TORCH_VERSION_PATCH)
  info["torch_version"] = std::to_string(TORCH_VERSION_MAJOR) + "." +
                          std::to_string(TORCH_VERSION_MINOR) + "." +
                          std::to_string(TORCH_VERSION_PATCH);
#else
  info["torch_version"] = std::string("unknown");
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "medgrid's compiled kernels: registers torch.ops.medgrid.pgd_step on import";
  module.def("build_info", &build_info,
             "dict: has_cuda (CUDA kernels compiled in), openmp, openmp_version, "
             "omp_max_threads, torch_threads (threads the CPU kernel uses), torch_version "
             "(the torch it was built against)");
}
