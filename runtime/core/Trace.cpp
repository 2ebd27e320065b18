//===- Trace.cpp ----------------------------------------------------------===//
#include "moert/Trace.h"
#include "moert/FileUtil.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>

namespace moert {

using json = nlohmann::json;

static const char *streamName(int s) {
  switch (s) {
  case 0:
    return "compute";
  case 1:
    return "communication";
  case 2:
    return "weight streaming";
  case 3:
    return "batch steps";
  default:
    return "stream";
  }
}

void Trace::write(const std::string &path, Comm &comm) const {
  json mine = json::array();
  for (const Event &e : events_)
    mine.push_back({e.name, e.cat, e.stream, e.startNs, e.durNs, e.issuedNs});
  // Step names come from the plan and need not be valid UTF-8.
  constexpr auto kReplace = json::error_handler_t::replace;
  std::vector<std::string> all = comm.gatherToRoot(mine.dump(-1, ' ', false, kReplace));
  if (comm.rank() != 0)
    return;
  int64_t t0 = std::numeric_limits<int64_t>::max();
  std::vector<json> perRank;
  for (const std::string &s : all) {
    perRank.push_back(json::parse(s));
    for (auto &e : perRank.back())
      t0 = std::min(t0, e[3].get<int64_t>());
  }
  json events = json::array();
  for (size_t r = 0; r < perRank.size(); ++r) {
    events.push_back({{"ph", "M"},
                      {"name", "process_name"},
                      {"pid", r},
                      {"args", {{"name", "rank " + std::to_string(r)}}}});
    std::vector<int> streams;
    for (auto &e : perRank[r]) {
      int s = e[2].get<int>();
      if (std::find(streams.begin(), streams.end(), s) == streams.end())
        streams.push_back(s);
      json ev = {{"ph", "X"},
                 {"name", e[0]},
                 {"cat", e[1]},
                 {"pid", r},
                 {"tid", s},
                 {"ts", double(e[3].get<int64_t>() - t0) / 1e3},
                 {"dur", double(e[4].get<int64_t>()) / 1e3}};
      if (int64_t issued = e[5].get<int64_t>())
        ev["args"] = {{"issued_us", double(issued - t0) / 1e3}};
      events.push_back(std::move(ev));
    }
    for (int s : streams)
      events.push_back({{"ph", "M"},
                        {"name", "thread_name"},
                        {"pid", r},
                        {"tid", s},
                        {"args", {{"name", streamName(s)}}}});
  }
  json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  writeFileAtomic(path, doc.dump(-1, ' ', false, kReplace));
}

} // namespace moert
