# `cmake --install build --prefix P` for the runtime: moe-run and
# moe-tokenize, the moert libraries with their headers (the generated
# plan_generated.h among them), the plan schema, and the CMake package
# `moert`, so that a program embeds the runtime with
#
#   find_package(moert CONFIG REQUIRED)
#   target_link_libraries(my-app PRIVATE moert::moert)      # plan, session, CPU
#   target_link_libraries(my-app PRIVATE moert::tokenizer)  # tokenizer.json
#
# The package is separate from MoECompiler (cmake/MoEInstall.cmake) because
# the runtime never needs LLVM/MLIR: its config finds only the runtime's own
# dependencies. Included in every build, the runtime-only one
# (MOE_ENABLE_COMPILER=OFF) too; test/Plugin/install.test builds a program
# against it (test/Plugin/Inputs/runtime-consumer).
include(GNUInstallDirs)
include(MoEPackage)

# Short names under the moert:: namespace (moert::core, not moert::moert_core).
set(MOERT_EXPORTED_TARGETS moe_plan_schema moert_core moert_cpu moert_comm_local moert
    moert_tokenizer)
set_target_properties(moe_plan_schema PROPERTIES EXPORT_NAME plan_schema)
set_target_properties(moert_core PROPERTIES EXPORT_NAME core)
set_target_properties(moert_cpu PROPERTIES EXPORT_NAME cpu)
set_target_properties(moert_comm_local PROPERTIES EXPORT_NAME comm_local)
set_target_properties(moert_tokenizer PROPERTIES EXPORT_NAME tokenizer)
if(TARGET moert_mpi)
  list(APPEND MOERT_EXPORTED_TARGETS moert_mpi)
  set_target_properties(moert_mpi PROPERTIES EXPORT_NAME mpi)
endif()
# The CUDA libraries include their headers without a directory, as in the
# build: installed in moert/cuda.
foreach(t cuda nccl)
  if(TARGET moert_${t})
    list(APPEND MOERT_EXPORTED_TARGETS moert_${t})
    set_target_properties(moert_${t} PROPERTIES EXPORT_NAME ${t})
    target_include_directories(moert_${t} PUBLIC
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/moert/cuda>)
  endif()
endforeach()

install(TARGETS ${MOERT_EXPORTED_TARGETS}
  EXPORT moertTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS moe-run moe-tokenize EXPORT moertTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Headers: moert/*.h, moert/cpu/*.h (the CPU kernels), the generated plan
# accessors and, with CUDA, the kernels' headers in moert/cuda (included
# without a directory, as in the build).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/moert
                  ${PROJECT_SOURCE_DIR}/runtime/backends/cpu/include/moert
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/runtime/include/moert/plan_generated.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moert)
if(TARGET moert_cuda)
  install(FILES
    ${PROJECT_SOURCE_DIR}/runtime/backends/cuda/CudaBackend.h
    ${PROJECT_SOURCE_DIR}/runtime/backends/cuda/CudaKernels.h
    ${PROJECT_SOURCE_DIR}/runtime/backends/cuda/DeviceMath.h
    ${PROJECT_SOURCE_DIR}/runtime/backends/cuda/NcclComm.h
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moert/cuda)
endif()
# The plan format's schema, for flatc (docs/plan-format.md).
install(FILES ${PROJECT_SOURCE_DIR}/runtime/schema/plan.fbs
  DESTINATION ${CMAKE_INSTALL_DATADIR}/moert)

# The config finds again what the build linked; these are the places the
# build found it, tried first.
get_filename_component(MOERT_OPENBLAS_DIR ${MOE_OPENBLAS_LIB} DIRECTORY)
moe_install_package(moert NAMESPACE moert
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_BINDIR CMAKE_INSTALL_DATADIR)
