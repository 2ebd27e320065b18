# CUDA detection (issue 14). Included from the top-level CMakeLists.txt,
# because enable_language(CUDA) must run in the directory common to every
# target that compiles or links CUDA code (runtime/ and test/).
#
#   MOE_ENABLE_CUDA=ON|OFF|AUTO   AUTO: on when nvcc is found (CMAKE_CUDA_COMPILER,
#                                 else /usr/local/cuda/bin/nvcc, else $CUDA_HOME/bin/nvcc)
#
# Sets (cache, internal): MOE_HAVE_CUDA, MOE_HAVE_NCCL, MOE_NCCL_INCLUDE, MOE_NCCL_LIB.
# CUDA stays off in the sanitizer and fuzzing builds (instrumented clang;
# CI time). Default architectures: sm_90a machine code (Hopper) plus
# compute_90 PTX, which the driver JIT-compiles for later architectures.
set(MOE_HAVE_CUDA OFF)
set(MOE_HAVE_NCCL OFF)

if(NOT MOE_ENABLE_CUDA MATCHES "^(ON|OFF|AUTO)$")
  message(FATAL_ERROR "MOE_ENABLE_CUDA must be ON, OFF or AUTO (got '${MOE_ENABLE_CUDA}')")
endif()

if(MOE_ENABLE_CUDA STREQUAL "OFF")
  set(_moe_cuda_why "MOE_ENABLE_CUDA=OFF")
elseif(MOE_ENABLE_SANITIZERS OR MOE_BUILD_FUZZERS)
  if(MOE_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOE_ENABLE_CUDA=ON is not supported with sanitizers or fuzzers")
  endif()
  set(_moe_cuda_why "sanitizer/fuzzer build")
else()
  set(_moe_nvcc "")
  if(CMAKE_CUDA_COMPILER)
    set(_moe_nvcc "${CMAKE_CUDA_COMPILER}")
  elseif(EXISTS /usr/local/cuda/bin/nvcc)
    set(_moe_nvcc /usr/local/cuda/bin/nvcc)
  elseif(DEFINED ENV{CUDA_HOME} AND EXISTS "$ENV{CUDA_HOME}/bin/nvcc")
    set(_moe_nvcc "$ENV{CUDA_HOME}/bin/nvcc")
  endif()
  if(_moe_nvcc STREQUAL "")
    if(MOE_ENABLE_CUDA STREQUAL "ON")
      message(FATAL_ERROR "MOE_ENABLE_CUDA=ON but nvcc was not found (set CMAKE_CUDA_COMPILER)")
    endif()
    set(_moe_cuda_why "no nvcc")
  else()
    set(CMAKE_CUDA_COMPILER "${_moe_nvcc}" CACHE FILEPATH "CUDA compiler")
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
      set(CMAKE_CUDA_ARCHITECTURES "90a-real;90-virtual" CACHE STRING "CUDA architectures")
    endif()
    # nvcc must use the project's host compiler; nvcc 13 accepts gcc 12,
    # clang only with -allow-unsupported-compiler.
    if(NOT CMAKE_CUDA_HOST_COMPILER)
      set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_CXX_COMPILER}" CACHE FILEPATH "CUDA host compiler")
    endif()
    if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang" AND NOT CMAKE_CUDA_FLAGS MATCHES "allow-unsupported")
      set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS} -allow-unsupported-compiler"
          CACHE STRING "CUDA flags" FORCE)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17) # CMake 3.25 knows no CUDA20 dialect for nvcc
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(CMAKE_CUDA_EXTENSIONS OFF)
    find_package(CUDAToolkit REQUIRED)
    set(MOE_HAVE_CUDA ON)

    # NCCL ships no CMake package: headers and library in the toolkit (this
    # machine) or wherever NCCL_HOME points. Optional.
    find_path(MOE_NCCL_INCLUDE nccl.h
      HINTS $ENV{NCCL_HOME}/include ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    find_library(MOE_NCCL_LIB nccl
      HINTS $ENV{NCCL_HOME}/lib ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib
            /usr/local/cuda/lib64)
    if(MOE_NCCL_INCLUDE AND MOE_NCCL_LIB)
      set(MOE_HAVE_NCCL ON)
    endif()
  endif()
endif()

set(MOE_HAVE_CUDA ${MOE_HAVE_CUDA} CACHE INTERNAL "")
set(MOE_HAVE_NCCL ${MOE_HAVE_NCCL} CACHE INTERNAL "")
if(MOE_HAVE_CUDA)
  message(STATUS "moe CUDA: ${CMAKE_CUDA_COMPILER} ${CMAKE_CUDA_COMPILER_VERSION}, "
                 "architectures ${CMAKE_CUDA_ARCHITECTURES}, NCCL=${MOE_HAVE_NCCL}")
else()
  message(STATUS "moe CUDA: off (${_moe_cuda_why})")
endif()
