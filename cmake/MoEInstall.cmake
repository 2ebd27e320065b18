# `cmake --install build --prefix P` for compiler engineers: headers
# (include/moe and the generated .h.inc), the ODS sources, the compiler
# libraries, moe-opt and moe-compile, and a CMake package so that an
# out-of-tree project can do
#
#   find_package(MoECompiler CONFIG REQUIRED)
#   target_link_libraries(my-tool PRIVATE MoECompiler::MoETransforms)   # a tool
#   target_link_libraries(my-plugin PRIVATE MoECompiler::PassPlugin)    # a plugin
#
# (docs/writing-a-pass.md; test/Plugin/install.test builds
# examples/pass-plugin against an installed tree).
include(GNUInstallDirs)
include(MoEPackage)

# Headers and compile flags for a pass plugin (a MODULE that takes the moe
# and MLIR symbols from the tool that loads it, so it links no library).
add_library(moe_pass_plugin INTERFACE)
add_library(MoECompiler::PassPlugin ALIAS moe_pass_plugin)
set_target_properties(moe_pass_plugin PROPERTIES EXPORT_NAME PassPlugin)
target_include_directories(moe_pass_plugin INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/dialects>)
add_dependencies(moe_pass_plugin MLIRMoEOpsIncGen MLIRMoEAttrsIncGen
                 MLIRMoEInterfacesIncGen MLIRMoEPassesIncGen)

set(MOE_INSTALLED_LIBRARIES MoECompilerOptions MoEDialect MoEAnalysis
    MoEImport MoEPlan MoETransforms)
install(TARGETS ${MOE_INSTALLED_LIBRARIES} moe_pass_plugin
  EXPORT MoECompilerTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# The tools find libMLIR.so where they were built against it (Debian keeps it
# out of the loader's path).
set_target_properties(moe-opt moe-compile PROPERTIES
  INSTALL_RPATH "\$ORIGIN/../${CMAKE_INSTALL_LIBDIR};${LLVM_LIBRARY_DIR}")
install(TARGETS moe-opt moe-compile EXPORT MoECompilerTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/moe
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(DIRECTORY ${PROJECT_BINARY_DIR}/dialects/moe/
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moe FILES_MATCHING PATTERN "*.h.inc"
  PATTERN CMakeFiles EXCLUDE)
# ODS next to the headers, as upstream MLIR installs its .td files.
install(FILES
  ${PROJECT_SOURCE_DIR}/dialects/moe/MoEDialect.td
  ${PROJECT_SOURCE_DIR}/dialects/moe/MoEAttrs.td
  ${PROJECT_SOURCE_DIR}/dialects/moe/MoEInterfaces.td
  ${PROJECT_SOURCE_DIR}/dialects/moe/MoEOps.td
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moe/Dialect)
install(FILES ${PROJECT_SOURCE_DIR}/dialects/moe/Passes.td
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moe/Transforms)

moe_install_package(MoECompiler NAMESPACE MoECompiler
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_BINDIR)
