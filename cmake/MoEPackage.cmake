# moe_install_package(NAME NAMESPACE NS [PATH_VARS VAR...]): installs the
# CMake package NAME of an export set NAMETargets under NS:: into
# lib/cmake/NAME, with cmake/NAMEConfig.cmake.in configured (PATH_VARS as
# for configure_package_config_file) and a version file. Used for the
# MoECompiler (MoEInstall.cmake) and moert (MoERuntimeInstall.cmake) packages.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)
include(GNUInstallDirs)

function(moe_install_package name)
  cmake_parse_arguments(ARG "" "NAMESPACE" "PATH_VARS" ${ARGN})
  set(dir ${CMAKE_INSTALL_LIBDIR}/cmake/${name})
  install(EXPORT ${name}Targets NAMESPACE ${ARG_NAMESPACE}:: DESTINATION ${dir})
  # Generated where find_package never looks (build/bin is on PATH in tests,
  # and CMake searches the prefix of every bin directory on PATH).
  set(gen ${PROJECT_BINARY_DIR}/CMakeFiles/${name}Package)
  configure_package_config_file(
    ${PROJECT_SOURCE_DIR}/cmake/${name}Config.cmake.in ${gen}/${name}Config.cmake
    INSTALL_DESTINATION ${dir}
    PATH_VARS ${ARG_PATH_VARS})
  # 0.x: a minor release may change the API.
  write_basic_package_version_file(${gen}/${name}ConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
  install(FILES ${gen}/${name}Config.cmake ${gen}/${name}ConfigVersion.cmake
    DESTINATION ${dir})
endfunction()
