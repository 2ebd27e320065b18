//===- MpiComm.h - The MPI communication backend ----------------*- C++ -*-===//
#pragma once

#include "moert/Comm.h"

namespace moert {

/// True when this process was started by an MPI launcher (mpirun/srun).
bool launchedByMpi();

/// Initializes MPI; the Comm finalizes it when destroyed.
std::unique_ptr<Comm> makeMpiComm();

} // namespace moert
