//===- moert-generate.cpp - a program embedding the installed runtime -----===//
//
// moert-generate PLAN N ID,ID,...: loads PLAN with the weights of the
// checkpoint it names, generates N tokens greedily on the CPU backend after
// the prompt ids and prints the new ids, comma-separated.
//
//===----------------------------------------------------------------------===//

#include "moert/Backend.h"
#include "moert/Comm.h"
#include "moert/Generate.h"
#include "moert/Plan.h"
#include "moert/Safetensors.h"
#include "moert/Session.h"
#include "moert/Weights.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char **argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: moert-generate PLAN N ID,ID,...\n");
    return 2;
  }
  std::vector<int64_t> prompt;
  std::stringstream ids(argv[3]);
  for (std::string id; std::getline(ids, id, ',');)
    prompt.push_back(std::stoll(id));
  try {
    moert::PlanFile plan = moert::PlanFile::load(argv[1]);
    std::unique_ptr<moert::Backend> backend = moert::makeBackend("cpu", {});
    std::unique_ptr<moert::Comm> comm = moert::makeLocalComm();
    auto checkpoint = std::make_shared<moert::Checkpoint>(plan.plan().checkpoint()->str());
    std::unique_ptr<moert::WeightStore> weights =
        moert::WeightStore::fromCheckpoint(plan, checkpoint, /*ranks=*/{0}, *backend);
    moert::Session session(plan, /*rank=*/0, *weights, *comm, *backend);
    moert::GenerateOptions options;
    options.maxNewTokens = std::atoll(argv[2]);
    options.stopAtEos = false;
    moert::GenerateResult result = moert::generate(session, *comm, prompt, options);
    for (size_t i = prompt.size(); i < result.tokens.size(); ++i)
      std::printf("%s%lld", i == prompt.size() ? "" : ",", (long long)result.tokens[i]);
    std::printf("\n");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "moert-generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
