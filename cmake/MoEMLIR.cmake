# Finds Debian's (or any) MLIR/LLVM 22 and sets up the out-of-tree MLIR helpers.
# Links the shared libMLIR.so: a small tool links in ~1 s instead of pulling
# hundreds of static archives.
if(NOT MLIR_DIR AND EXISTS /usr/lib/llvm-22/lib/cmake/mlir)
  set(MLIR_DIR /usr/lib/llvm-22/lib/cmake/mlir)
endif()
find_package(MLIR REQUIRED CONFIG)
if(LLVM_PACKAGE_VERSION VERSION_LESS 22 OR LLVM_PACKAGE_VERSION VERSION_GREATER_EQUAL 23)
  message(FATAL_ERROR "moe-compiler needs MLIR 22, found ${LLVM_PACKAGE_VERSION}")
endif()
message(STATUS "Using MLIR from ${MLIR_DIR}")
message(STATUS "Using LLVM ${LLVM_PACKAGE_VERSION} from ${LLVM_DIR}")

list(APPEND CMAKE_MODULE_PATH "${MLIR_CMAKE_DIR}" "${LLVM_CMAKE_DIR}")
set(LLVM_RUNTIME_OUTPUT_INTDIR ${CMAKE_BINARY_DIR}/bin)
set(LLVM_LIBRARY_OUTPUT_INTDIR ${CMAKE_BINARY_DIR}/lib)
set(MLIR_BINARY_DIR ${CMAKE_BINARY_DIR})

include(TableGen)
include(AddLLVM)
include(AddMLIR)
include(HandleLLVMOptions)

if(NOT DEFINED MLIR_LINK_MLIR_DYLIB)
  set(MLIR_LINK_MLIR_DYLIB ON)
endif()

# Debian's MLIRConfig points LLVM_EXTERNAL_LIT at a llvm-lit that does not exist.
if(NOT LLVM_EXTERNAL_LIT OR NOT EXISTS "${LLVM_EXTERNAL_LIT}")
  find_program(LLVM_EXTERNAL_LIT NAMES lit llvm-lit
               HINTS ${LLVM_TOOLS_BINARY_DIR} /usr/lib/llvm-22/bin)
endif()

include_directories(SYSTEM ${LLVM_INCLUDE_DIRS} ${MLIR_INCLUDE_DIRS})
include_directories(${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include)
link_directories(${LLVM_BUILD_LIBRARY_DIR})
# LLVM_DEFINITIONS is one space-separated string.
separate_arguments(MOE_LLVM_DEFINITIONS NATIVE_COMMAND "${LLVM_DEFINITIONS}")
add_definitions(${MOE_LLVM_DEFINITIONS})
