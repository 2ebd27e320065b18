//===- moe-serve.cpp - OpenAI-compatible HTTP server on the batched engine -===//
//
// moe-serve PLAN [--host=127.0.0.1] [--port=8000] [--weights=DIR] ...
// One engine thread owns the Session and runs core's streaming scheduler
// (runBatchEngine); HTTP threads parse a request, hand its sequences to the
// engine's queue and wait on the request's condition variable for tokens,
// so requests join the running batch at the next step. Every failure of a
// request is an OpenAI-style {"error": {...}} answer; the server keeps
// serving. SIGTERM/SIGINT: stop accepting, finish the running requests
// (cancel them after --drain-seconds), exit 0.
//
//===----------------------------------------------------------------------===//
#include "ToolSupport.h"
#include "moert/Backend.h"
#include "moert/Batch.h"
#ifdef MOERT_HAVE_MPI
#include "moert/MpiComm.h"
#endif
#include "moert/Trace.h"
#include "moert/Version.h"

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <random>
#include <thread>

using namespace moert;
using namespace moetool;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

const char *kUsage = R"(usage: moe-serve PLAN [options]
  --host=ADDR              address to listen on (default 127.0.0.1)
  --port=N                 port (default 8000; 0: a free port, printed on stdout)
  --weights=DIR            checkpoint directory or .safetensors file
                           (default: the checkpoint the plan was compiled from)
  --random-weights         generate weights per the plan's init (seed 0), as moe-run
                           does: a plan from a model description, benchmarks, tests
  --tokenizer=FILE         tokenizer.json for text prompts and stop strings
                           (default: the checkpoint's; without one, token-id prompts only)
  --model-name=NAME        the model name of /v1/models and responses (default: the plan's)
  --max-queue=N            requests waiting for a batch slot before 503 (default 256)
  --max-batch=N            sequences per step (default: the plan's max_batch)
  --prefill-chunk=N        prompt tokens of one sequence per step (default: max_tokens)
  --drain-seconds=S        on SIGTERM, cancel requests still running after S s (default 5)
  --backend=cpu            backend (default: the plan's target)
  --threads=N              compute threads per rank (default: cores / the plan's ranks)
  --version, --help
Endpoints: POST /v1/completions, GET /v1/models, GET /health, GET /metrics
(docs/serving.md).
)";

struct Options {
  std::string plan, host = "127.0.0.1", weights, tokenizer, backend, modelName;
  int64_t port = 8000, maxQueue = 256, maxBatch = 0, prefillChunk = 0, threads = -1;
  double drainSeconds = 5.0;
  bool help = false, version = false, randomWeights = false;
};

Options parseArgs(int argc, char **argv) {
  Options o;
  forEachFlag(argc, argv, "moe-serve", o.plan, [&](const Flag &f) {
    const std::string &key = f.key;
    if (key == "--host")
      o.host = f.value();
    else if (key == "--port")
      o.port = f.count(0, 65535);
    else if (key == "--weights")
      o.weights = f.value();
    else if (key == "--random-weights")
      o.randomWeights = f.set();
    else if (key == "--tokenizer")
      o.tokenizer = f.value();
    else if (key == "--model-name")
      o.modelName = f.value();
    else if (key == "--max-queue")
      o.maxQueue = f.count(0, 1 << 20);
    else if (key == "--max-batch")
      o.maxBatch = f.count(1, 65536);
    else if (key == "--prefill-chunk")
      o.prefillChunk = f.count(1, 1 << 30);
    else if (key == "--drain-seconds") {
      o.drainSeconds = f.number<double>();
      if (!(o.drainSeconds >= 0 && o.drainSeconds <= 3600))
        fail("--drain-seconds={}: out of range (expected 0..3600)", f.val);
    } else if (key == "--backend")
      o.backend = f.value();
    else if (key == "--threads")
      o.threads = f.count(1, 1024);
    else if (key == "--help")
      o.help = f.set();
    else if (key == "--version")
      o.version = f.set();
    else
      return false;
    return true;
  });
  if (!o.help && !o.version && o.plan.empty())
    fail("missing PLAN (expected moe-serve PLAN [options])");
  if (o.randomWeights && !o.weights.empty())
    fail("--weights and --random-weights both given (expected one source of weights)");
  return o;
}

//===----------------------------------------------------------------------===//
// Metrics
//===----------------------------------------------------------------------===//

/// A Prometheus histogram of seconds.
struct Histogram {
  static constexpr double kBounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1,     2.5,  5,     10,   30,  60};
  uint64_t counts[std::size(kBounds)] = {};
  uint64_t total = 0;
  double sum = 0;
  void add(double s) {
    for (size_t i = 0; i < std::size(kBounds); ++i)
      counts[i] += s <= kBounds[i];
    ++total;
    sum += s;
  }
  void print(std::string &out, const char *name, const char *help) const {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    for (size_t i = 0; i < std::size(kBounds); ++i)
      out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, kBounds[i], counts[i]);
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, total, name,
                       sum, name, total);
  }
};

struct Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, uint64_t> requests; // (path, status) -> count
  uint64_t promptTokens = 0, generatedTokens = 0, steps = 0, sequenceSteps = 0;
  uint64_t cancelled = 0, preemptions = 0;
  int64_t running = 0, engineQueued = 0;
  Histogram ttft, latency;
};

//===----------------------------------------------------------------------===//
// The engine and its request queue
//===----------------------------------------------------------------------===//

/// One HTTP request's sequences (one per prompt), filled by the engine
/// thread, waited on by the HTTP thread.
struct Call {
  std::mutex mu;
  std::condition_variable cv;
  struct Seq {
    std::vector<int64_t> tokens;
    bool done = false;
    SequenceResult result;
  };
  std::vector<Seq> seqs;
  size_t left = 0; // sequences not done
  std::atomic<bool> cancel{false};
  int64_t startNs = 0;
  // A streamed call is woken for every token; a non-streamed one only when
  // it is done (a wake-up per token per waiter takes the engine's cores).
  bool stream = false;
  // Non-streamed: readable once every sequence is done, so that the HTTP
  // thread can wait for it and for its client's socket in one poll().
  int doneFd = -1;

  ~Call() {
    if (doneFd >= 0)
      ::close(doneFd);
  }
  /// Under `mu`: `s` is done; wakes the waiter.
  void finish(Seq &s) {
    s.done = true;
    if (--left == 0 && doneFd >= 0) {
      uint64_t one = 1;
      ssize_t ignored = ::write(doneFd, &one, sizeof one);
      (void)ignored;
    }
    cv.notify_all();
  }
};

/// The source the engine polls: HTTP threads submit, the engine takes.
class Engine final : public RequestSource {
public:
  Engine(Metrics &metrics, int64_t maxQueue, int64_t maxBatch)
      : metrics_(metrics), maxQueue_(maxQueue), maxBatch_(maxBatch) {}

  enum class Submit { Ok, Full, Stopping };
  /// Queues every sequence of `call` or none (the queue limit counts
  /// sequences that wait for a slot).
  Submit submit(const std::shared_ptr<Call> &call, std::vector<SequenceRequest> reqs) {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_ || failed_)
      return Submit::Stopping;
    if (int64_t(incoming_.size() + reqs.size()) + engineQueued_ > maxQueue_)
      return Submit::Full;
    for (size_t i = 0; i < reqs.size(); ++i) {
      uint64_t tag = nextTag_++;
      incoming_.emplace_back(tag, std::move(reqs[i]));
      pending_[tag] = {call, i};
    }
    cv_.notify_one();
    return Submit::Ok;
  }
  /// No new requests; the engine finishes the running ones (or cancels them
  /// after cancelAll()).
  void stop() {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  void cancelAll() { cancelAll_ = true; }
  int64_t queued() {
    std::lock_guard<std::mutex> l(mu_);
    return int64_t(incoming_.size()) + engineQueued_;
  }
  /// The engine died (a backend failure): every waiting call gets `why`.
  void failAll(const std::string &why) {
    std::lock_guard<std::mutex> l(mu_);
    failed_ = true;
    for (auto &[tag, ref] : pending_) {
      std::lock_guard<std::mutex> cl(ref.call->mu);
      Call::Seq &s = ref.call->seqs[ref.index];
      if (!s.done) {
        s.result.error = why;
        ref.call->finish(s);
      }
    }
    pending_.clear();
  }

  bool poll(std::vector<std::pair<uint64_t, SequenceRequest>> &out, bool idle) override {
    std::unique_lock<std::mutex> l(mu_);
    if (idle) {
      cv_.wait(l, [&] { return stopping_ || !incoming_.empty(); });
      // Woken from idle by a request: others often follow within a moment
      // (clients whose answers went out at the same step send their next
      // ones). Each would otherwise start one step after the other, and a
      // step of one sequence reads every weight as a full one does. Wait for
      // them as long as a step takes (at most kMaxGatherNs; a lone request's
      // first token comes that much later), or until a batch is full.
      int64_t wait = std::min(stepNs_, kMaxGatherNs);
      if (wait > 0)
        cv_.wait_for(l, std::chrono::nanoseconds(wait), [&] {
          return stopping_ || int64_t(incoming_.size()) >= maxBatch_;
        });
    }
    polledNs_ = nowNs();
    for (auto &r : incoming_)
      out.push_back(std::move(r));
    // They wait in the engine's queue until the next onStep says otherwise:
    // the queue limit must not see them nowhere in between.
    engineQueued_ += int64_t(incoming_.size());
    incoming_.clear();
    return !stopping_;
  }
  bool cancelled(uint64_t tag) override {
    if (cancelAll_)
      return true;
    std::lock_guard<std::mutex> l(mu_);
    auto it = pending_.find(tag);
    return it != pending_.end() && it->second.call->cancel;
  }
  void onToken(uint64_t tag, int64_t token) override {
    Ref ref = find(tag);
    std::lock_guard<std::mutex> l(ref.call->mu);
    Call::Seq &s = ref.call->seqs[ref.index];
    if (s.tokens.empty()) {
      std::lock_guard<std::mutex> ml(metrics_.mu);
      metrics_.ttft.add(double(nowNs() - ref.call->startNs) / 1e9);
    }
    s.tokens.push_back(token);
    if (ref.call->stream)
      ref.call->cv.notify_all();
  }
  void onFinish(uint64_t tag, SequenceResult result) override {
    Ref ref;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = pending_.find(tag);
      ref = it->second;
      pending_.erase(it);
    }
    {
      std::lock_guard<std::mutex> ml(metrics_.mu);
      metrics_.generatedTokens += result.output.size();
      metrics_.cancelled += result.finishReason == "cancelled";
    }
    std::lock_guard<std::mutex> l(ref.call->mu);
    Call::Seq &s = ref.call->seqs[ref.index];
    s.result = std::move(result);
    ref.call->finish(s);
  }
  void onPreempted(uint64_t) override {
    std::lock_guard<std::mutex> ml(metrics_.mu);
    ++metrics_.preemptions;
  }
  void onStep(int64_t running, int64_t queued) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      engineQueued_ = queued;
      // The step just run (poll returns right before it): a running mean.
      int64_t took = nowNs() - polledNs_;
      stepNs_ = stepNs_ == 0 ? took : (7 * stepNs_ + took) / 8;
    }
    std::lock_guard<std::mutex> ml(metrics_.mu);
    metrics_.running = running;
    metrics_.engineQueued = queued;
    ++metrics_.steps;
    metrics_.sequenceSteps += uint64_t(running);
  }

private:
  struct Ref {
    std::shared_ptr<Call> call;
    size_t index = 0;
  };
  Ref find(uint64_t tag) {
    std::lock_guard<std::mutex> l(mu_);
    return pending_.at(tag);
  }

  static constexpr int64_t kMaxGatherNs = 50'000'000;

  Metrics &metrics_;
  const int64_t maxQueue_, maxBatch_;
  int64_t stepNs_ = 0, polledNs_ = 0; // engine thread, under mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<uint64_t, SequenceRequest>> incoming_;
  std::map<uint64_t, Ref> pending_; // every sequence not finished yet
  int64_t engineQueued_ = 0;
  uint64_t nextTag_ = 0;
  bool stopping_ = false, failed_ = false;
  std::atomic<bool> cancelAll_{false};
};

//===----------------------------------------------------------------------===//
// Requests
//===----------------------------------------------------------------------===//

/// A request the server refuses: HTTP status, message, the parameter.
struct ApiError {
  int status;
  std::string message, param, type = "invalid_request_error";
};

std::string errorBody(const ApiError &e) {
  ojson err;
  err["message"] = e.message;
  err["type"] = e.type;
  err["param"] = e.param.empty() ? ojson(nullptr) : ojson(e.param);
  err["code"] = nullptr;
  ojson out;
  out["error"] = std::move(err);
  return out.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

void sendError(httplib::Response &res, const ApiError &e) {
  res.status = e.status;
  res.set_content(errorBody(e), "application/json");
}

[[noreturn]] void badParam(const std::string &param, const std::string &msg) {
  throw ApiError{400, fmt::format("{}: {}", param, msg), param};
}

/// What the server knows besides the engine.
struct Server {
  const PlanFile *plan = nullptr;
  std::unique_ptr<Tokenizer> tokenizer; // null: token-id prompts only
  std::string tokenizerWhy;             // why there is none
  std::vector<int64_t> eosIds;          // generation_config.json's
  std::string model;
  Engine *engine = nullptr;
  Metrics *metrics = nullptr;
  std::atomic<uint64_t> nextId{0};
  mutable std::atomic<uint64_t> nextSeed{0}; // unseeded requests
};

/// A parsed /v1/completions request.
struct Completion {
  std::vector<SequenceRequest> reqs;
  std::vector<std::string> stops;
  bool stream = false, includeUsage = false, returnTokenIds = false;
};

bool isInt(const json &v) { return v.is_number_integer() || v.is_number_unsigned(); }

Completion parseCompletion(const Server &srv, const json &body) {
  if (!body.is_object())
    throw ApiError{400, "the body is not a JSON object (expected {\"prompt\": ..., ...})", ""};
  Completion c;
  auto get = [&](const char *k) -> const json * {
    auto it = body.find(k);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  if (const json *m = get("model")) {
    if (!m->is_string())
      badParam("model", "not a string (expected the model name of /v1/models)");
    if (m->get<std::string>() != srv.model)
      throw ApiError{404,
                     fmt::format("model: the model `{}` does not exist (expected `{}`)",
                                 m->get<std::string>(), srv.model),
                     "model", "not_found_error"};
  }
  if (const json *n = get("n"); n && !(isInt(*n) && n->get<int64_t>() == 1))
    badParam("n", fmt::format("{} is not supported (expected 1)", n->dump()));
  if (const json *b = get("best_of"); b && !(isInt(*b) && b->get<int64_t>() == 1))
    badParam("best_of", fmt::format("{} is not supported (expected 1)", b->dump()));
  if (const json *e = get("echo"); e && !(e->is_boolean() && !e->get<bool>()))
    badParam("echo", "not supported (expected false)");
  if (get("logprobs"))
    badParam("logprobs", "not supported (expected null)");
  for (const char *k : {"presence_penalty", "frequency_penalty"})
    if (const json *p = get(k); p && !(p->is_number() && p->get<double>() == 0.0))
      badParam(k, "not supported (expected 0)");
  auto boolean = [&](const char *k) {
    const json *v = get(k);
    if (v && !v->is_boolean())
      badParam(k, fmt::format("{} is not a boolean (expected true or false)", v->dump()));
    return v && v->get<bool>();
  };
  c.stream = boolean("stream");
  c.returnTokenIds = boolean("return_token_ids");
  bool ignoreEos = boolean("ignore_eos");
  if (const json *so = get("stream_options")) {
    if (!so->is_object())
      badParam("stream_options", "not an object (expected {\"include_usage\": true})");
    if (!c.stream)
      badParam("stream_options", "only with stream: true");
    if (auto it = so->find("include_usage"); it != so->end() && !it->is_null()) {
      if (!it->is_boolean())
        badParam("stream_options.include_usage", "not a boolean (expected true or false)");
      c.includeUsage = it->get<bool>();
    }
  }
  int64_t maxTokens = 16; // OpenAI's default
  if (const json *v = get("max_tokens")) {
    if (!isInt(*v) || v->get<int64_t>() < 0)
      badParam("max_tokens", fmt::format("{} (expected an integer >= 0)", v->dump()));
    maxTokens = v->get<int64_t>();
  }
  float temperature = 1.0f, topP = 1.0f; // OpenAI's defaults
  if (const json *v = get("temperature")) {
    if (!v->is_number() || !(v->get<double>() >= 0.0) || !std::isfinite(v->get<double>()))
      badParam("temperature", fmt::format("{} (expected a number >= 0)", v->dump()));
    temperature = float(v->get<double>());
  }
  if (const json *v = get("top_p")) {
    if (!v->is_number() || !(v->get<double>() > 0.0 && v->get<double>() <= 1.0))
      badParam("top_p", fmt::format("{} (expected a number with 0 < top_p <= 1)", v->dump()));
    topP = float(v->get<double>());
  }
  bool haveSeed = false;
  uint64_t seed = 0;
  if (const json *v = get("seed")) {
    if (!isInt(*v) || (v->is_number_integer() && v->get<int64_t>() < 0 && !v->is_number_unsigned()))
      badParam("seed", fmt::format("{} (expected an integer >= 0)", v->dump()));
    seed = v->get<uint64_t>();
    haveSeed = true;
  }
  if (const json *v = get("stop")) {
    auto add = [&](const json &s) {
      if (!s.is_string() || s.get<std::string>().empty())
        badParam("stop", fmt::format("{} (expected a non-empty string or a list of them)",
                                     s.dump(-1, ' ', false, json::error_handler_t::replace)));
      c.stops.push_back(s.get<std::string>());
    };
    if (v->is_array()) {
      if (v->size() > 4)
        badParam("stop", fmt::format("{} strings (expected at most 4)", v->size()));
      for (const json &s : *v)
        add(s);
    } else {
      add(*v);
    }
    if (!c.stops.empty() && !srv.tokenizer)
      badParam("stop", fmt::format("stop strings need a tokenizer, and there is none ({})",
                                   srv.tokenizerWhy));
  }

  // The prompts: a string, a list of strings, a list of ids or of id lists.
  const json *p = get("prompt");
  if (!p)
    badParam("prompt", "missing (expected a string, a list of strings, a list of token ids or "
                       "a list of such lists)");
  std::vector<std::vector<int64_t>> prompts;
  auto text = [&](const json &s, size_t k) {
    if (!srv.tokenizer)
      badParam("prompt", fmt::format("text needs a tokenizer, and there is none ({}; expected "
                                     "token ids)",
                                     srv.tokenizerWhy));
    std::vector<int64_t> ids;
    try {
      for (uint32_t id : srv.tokenizer->encodePrompt(s.get<std::string>()))
        ids.push_back(int64_t(id));
    } catch (const std::exception &e) {
      badParam("prompt", fmt::format("prompt {}: {}", k, e.what()));
    }
    return ids;
  };
  auto idList = [&](const json &l, size_t k) {
    std::vector<int64_t> ids;
    for (const json &v : l) {
      if (!isInt(v) || v.get<int64_t>() < 0)
        badParam("prompt", fmt::format("prompt {}: {} is not a token id (expected integers >= 0)",
                                       k, v.dump(-1, ' ', false, json::error_handler_t::replace)));
      ids.push_back(v.get<int64_t>());
    }
    return ids;
  };
  if (p->is_string()) {
    prompts.push_back(text(*p, 0));
  } else if (p->is_array() && !p->empty()) {
    const json &first = p->front();
    if (first.is_string()) {
      for (size_t k = 0; k < p->size(); ++k) {
        if (!(*p)[k].is_string())
          badParam("prompt", "a list that mixes strings and other values (expected all strings)");
        prompts.push_back(text((*p)[k], k));
      }
    } else if (first.is_array()) {
      for (size_t k = 0; k < p->size(); ++k) {
        if (!(*p)[k].is_array())
          badParam("prompt", "a list that mixes lists and other values (expected all lists)");
        prompts.push_back(idList((*p)[k], k));
      }
    } else {
      prompts.push_back(idList(*p, 0));
    }
  } else {
    badParam("prompt", "expected a string, a list of strings, a list of token ids or a list of "
                       "such lists");
  }

  std::vector<std::string> stops = c.stops;
  const Tokenizer *tok = srv.tokenizer.get();
  for (size_t k = 0; k < prompts.size(); ++k) {
    SequenceRequest r;
    r.prompt = std::move(prompts[k]);
    r.maxNewTokens = maxTokens;
    r.temperature = temperature;
    r.topP = topP;
    // Without a seed each request samples differently (as OpenAI does).
    r.seed = haveSeed ? seed + k : 0x9e3779b97f4a7c15ull * (1 + srv.nextSeed++);
    r.stopAtEos = !ignoreEos;
    r.eosIds = srv.eosIds;
    if (!stops.empty()) {
      r.stopStrings = stops;
      r.stopCheck = stopStringCheck(tok, stops);
    }
    if (std::string why = checkRequest(*srv.plan, r); !why.empty())
      badParam(why.find("new tokens") != std::string::npos ? "max_tokens" : "prompt",
               prompts.size() > 1 ? fmt::format("prompt {}: {}", k, why) : why);
    c.reqs.push_back(std::move(r));
  }
  return c;
}

/// The text of a finished sequence, cut before a stop string it ends at.
std::optional<std::string> finalText(const Server &srv, const Completion &c,
                                     const SequenceResult &r) {
  if (!srv.tokenizer)
    return std::nullopt;
  std::optional<std::string> t = decodeText(*srv.tokenizer, r.output);
  if (t && r.finishReason == "stop")
    for (const std::string &s : c.stops)
      if (size_t at = t->find(s); at != std::string::npos)
        t->resize(at);
  return t;
}

/// OpenAI's finish reasons; a sequence cancelled at shutdown is vLLM's "abort".
std::string finishReason(const SequenceResult &r) {
  return r.finishReason == "cancelled" ? "abort" : r.finishReason;
}

ojson usageOf(const Completion &c, const std::vector<Call::Seq> &seqs) {
  int64_t prompt = 0, gen = 0;
  for (size_t k = 0; k < c.reqs.size(); ++k) {
    prompt += int64_t(c.reqs[k].prompt.size());
    gen += int64_t(seqs[k].result.output.size());
  }
  return {{"prompt_tokens", prompt}, {"completion_tokens", gen}, {"total_tokens", prompt + gen}};
}

std::string dumpJson(const ojson &j) {
  return j.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

/// The socket of the connection `req` came on, or -1. httplib 0.11.4 tells
/// a handler neither its socket nor whether its client is still there
/// (later versions have Request::is_connection_closed). While the handler
/// runs its connection is open, and no other open socket has the same
/// local and peer addresses: the socket is the one that has them.
int clientSocket(const httplib::Request &req) {
  // Numeric comparisons: this runs once per non-streamed request over every
  // open descriptor (mostly the other clients' sockets).
  auto is = [](const sockaddr_storage &a, const std::string &host, int port) {
    if (a.ss_family == AF_INET) {
      const auto &s = reinterpret_cast<const sockaddr_in &>(a);
      in_addr want{};
      return ntohs(s.sin_port) == port && ::inet_pton(AF_INET, host.c_str(), &want) == 1 &&
             want.s_addr == s.sin_addr.s_addr;
    }
    if (a.ss_family == AF_INET6) {
      const auto &s = reinterpret_cast<const sockaddr_in6 &>(a);
      in6_addr want{};
      return ntohs(s.sin6_port) == port && ::inet_pton(AF_INET6, host.c_str(), &want) == 1 &&
             std::memcmp(&want, &s.sin6_addr, sizeof want) == 0;
    }
    return false;
  };
  DIR *dir = ::opendir("/proc/self/fd");
  if (!dir)
    return -1;
  int found = -1;
  while (dirent *e = ::readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == ::dirfd(dir))
      continue;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (::getpeername(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0 ||
        !is(a, req.remote_addr, req.remote_port))
      continue;
    len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0 ||
        !is(a, req.local_addr, req.local_port))
      continue;
    found = fd;
    break;
  }
  ::closedir(dir);
  return found;
}

/// Waits until every sequence of a non-streamed call is done. A client that
/// closes its connection meanwhile (its FIN: POLLRDHUP) cancels them, so
/// their slots and KV pages are free at the engine's next step; the answer
/// then goes nowhere. (A client that only shuts down its sending side is
/// taken as gone too.)
void waitNonStreamed(Call &call, int sock) {
  if (sock >= 0 && call.doneFd >= 0) {
    pollfd fds[2] = {{call.doneFd, POLLIN, 0}, {sock, POLLRDHUP, 0}};
    for (;;) {
      int r = ::poll(fds, 2, -1);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0 || fds[0].revents || (fds[1].revents & POLLNVAL))
        break; // done, or nothing to watch
      if (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
        call.cancel = true;
        break;
      }
    }
  }
  std::unique_lock<std::mutex> l(call.mu);
  call.cv.wait(l, [&] { return call.left == 0; });
}

void handleCompletions(Server &srv, const httplib::Request &req, httplib::Response &res) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded())
    throw ApiError{400, "the body is not valid JSON (expected a JSON object)", ""};
  auto c = std::make_shared<Completion>(parseCompletion(srv, body));
  auto call = std::make_shared<Call>();
  call->seqs.resize(c->reqs.size());
  call->left = c->reqs.size();
  call->stream = c->stream;
  if (!c->stream)
    call->doneFd = ::eventfd(0, EFD_CLOEXEC); // -1: wait without watching the client
  call->startNs = nowNs();
  {
    std::lock_guard<std::mutex> ml(srv.metrics->mu);
    for (const SequenceRequest &r : c->reqs)
      srv.metrics->promptTokens += r.prompt.size();
  }
  Engine::Submit s = srv.engine->submit(call, c->reqs);
  if (s == Engine::Submit::Full)
    throw ApiError{503, "the server is busy: its request queue is full (expected a retry later)",
                   "", "service_unavailable_error"};
  if (s == Engine::Submit::Stopping)
    throw ApiError{503, "the server is shutting down", "", "service_unavailable_error"};

  std::string id = fmt::format("cmpl-{:016x}{:08x}", uint64_t(call->startNs),
                               srv.nextId.fetch_add(1));
  int64_t created = int64_t(std::time(nullptr));
  Metrics *metrics = srv.metrics;
  auto recordLatency = [metrics, call] {
    std::lock_guard<std::mutex> ml(metrics->mu);
    metrics->latency.add(double(nowNs() - call->startNs) / 1e9);
  };

  if (!c->stream) {
    waitNonStreamed(*call, clientSocket(req));
    std::unique_lock<std::mutex> l(call->mu);
    for (const Call::Seq &q : call->seqs)
      if (!q.result.error.empty())
        throw ApiError{500, q.result.error, "", "server_error"};
    ojson choices = ojson::array();
    for (size_t k = 0; k < c->reqs.size(); ++k) {
      const SequenceResult &r = call->seqs[k].result;
      ojson ch;
      ch["index"] = k;
      ch["text"] = finalText(srv, *c, r).value_or("");
      ch["logprobs"] = nullptr;
      ch["finish_reason"] = finishReason(r);
      if (c->returnTokenIds) {
        ch["prompt_token_ids"] = c->reqs[k].prompt;
        ch["token_ids"] = r.output;
      }
      choices.push_back(std::move(ch));
    }
    ojson out;
    out["id"] = id;
    out["object"] = "text_completion";
    out["created"] = created;
    out["model"] = srv.model;
    out["choices"] = std::move(choices);
    out["usage"] = usageOf(*c, call->seqs);
    l.unlock();
    recordLatency();
    res.set_content(dumpJson(out), "application/json");
    return;
  }

  // Server-sent events: one chunk per new text (and ids) of a sequence, a
  // last chunk per sequence with its finish_reason, usage if asked, [DONE].
  struct StreamState {
    std::vector<size_t> sentTokens;
    std::vector<std::string> text;      // every piece decoded so far
    std::vector<size_t> sentText;       // bytes of `text` sent
    std::vector<bool> finished;         // its last chunk sent
    std::vector<std::unique_ptr<DecodeStream>> decode;
    bool over = false;
  };
  auto st = std::make_shared<StreamState>();
  size_t n = c->reqs.size();
  st->sentTokens.assign(n, 0);
  st->text.assign(n, "");
  st->sentText.assign(n, 0);
  st->finished.assign(n, false);
  for (size_t k = 0; k < n; ++k)
    st->decode.push_back(srv.tokenizer ? std::make_unique<DecodeStream>(*srv.tokenizer, true)
                                       : nullptr);
  size_t holdBack = 0; // text that may still become a stop string is sent at the end
  for (const std::string &s : c->stops)
    holdBack = std::max(holdBack, s.size() - 1);
  std::string model = srv.model;
  const Server *server = &srv;
  auto chunk = [id, created, model](size_t k, const std::string &text, ojson finish,
                                    const std::vector<int64_t> *ids,
                                    const std::vector<int64_t> *promptIds) {
    ojson ch;
    ch["index"] = k;
    ch["text"] = text;
    ch["logprobs"] = nullptr;
    ch["finish_reason"] = std::move(finish);
    if (promptIds)
      ch["prompt_token_ids"] = *promptIds;
    if (ids)
      ch["token_ids"] = *ids;
    ojson out;
    out["id"] = id;
    out["object"] = "text_completion";
    out["created"] = created;
    out["model"] = model;
    out["choices"] = ojson::array({std::move(ch)});
    return "data: " + dumpJson(out) + "\n\n";
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=](size_t, httplib::DataSink &sink) {
        std::string out;
        bool all = true;
        {
          std::unique_lock<std::mutex> l(call->mu);
          // Wait for something new to send.
          call->cv.wait(l, [&] {
            for (size_t k = 0; k < n; ++k)
              if (!st->finished[k] &&
                  (call->seqs[k].done || call->seqs[k].tokens.size() > st->sentTokens[k]))
                return true;
            return false;
          });
          for (size_t k = 0; k < n; ++k) {
            const Call::Seq &q = call->seqs[k];
            if (st->finished[k])
              continue;
            if (!q.result.error.empty()) {
              // The engine died mid-stream: an error event, then the end.
              out += "data: " + errorBody({500, q.result.error, "", "server_error"}) + "\n\n";
              st->finished[k] = true;
              continue;
            }
            std::vector<int64_t> ids(q.tokens.begin() + int64_t(st->sentTokens[k]),
                                     q.tokens.end());
            st->sentTokens[k] = q.tokens.size();
            if (st->decode[k])
              for (int64_t t : ids) {
                try {
                  st->text[k] += st->decode[k]->step(uint32_t(t));
                } catch (const std::exception &) {
                  // An id the tokenizer cannot decode adds no text.
                }
              }
            std::string piece;
            ojson finish = nullptr;
            if (q.done) {
              if (st->decode[k]) {
                std::optional<std::string> t = finalText(*server, *c, q.result);
                st->text[k] = t.value_or(st->text[k] + st->decode[k]->flush());
              }
              if (st->text[k].size() > st->sentText[k])
                piece = st->text[k].substr(st->sentText[k]);
              finish = finishReason(q.result);
              st->finished[k] = true;
            } else if (st->text[k].size() > st->sentText[k] + holdBack) {
              size_t upto = st->text[k].size() - holdBack;
              // A whole stop string can be here before the sequence is done:
              // the engine reports the token that completes it, then finishes
              // the sequence, and this may run in between. Nothing from it on
              // is sent (the final text is cut before it).
              for (const std::string &stop : c->stops) {
                size_t sent = st->sentText[k];
                size_t from = sent >= stop.size() ? sent - stop.size() + 1 : 0;
                size_t at = st->text[k].find(stop, from);
                if (at != std::string::npos)
                  upto = std::min(upto, std::max(at, st->sentText[k]));
              }
              piece = st->text[k].substr(st->sentText[k], upto - st->sentText[k]);
            }
            st->sentText[k] += piece.size();
            if (ids.empty() && piece.empty() && finish.is_null())
              continue;
            bool first = c->returnTokenIds && st->sentTokens[k] == ids.size();
            out += chunk(k, piece, finish, c->returnTokenIds ? &ids : nullptr,
                         first ? &c->reqs[k].prompt : nullptr);
          }
          for (size_t k = 0; k < n; ++k)
            all = all && st->finished[k];
          if (all && c->includeUsage) {
            ojson u;
            u["id"] = id;
            u["object"] = "text_completion";
            u["created"] = created;
            u["model"] = model;
            u["choices"] = ojson::array();
            u["usage"] = usageOf(*c, call->seqs);
            out += "data: " + dumpJson(u) + "\n\n";
          }
        }
        if (all)
          out += "data: [DONE]\n\n";
        // A client that went away: the write fails, the release below
        // cancels its sequences.
        if (!out.empty() && !sink.write(out.data(), out.size()))
          return false;
        if (all) {
          st->over = true;
          sink.done();
        }
        return true;
      },
      [call, st, recordLatency](bool) {
        // Runs when the response is released: done or the client is gone.
        if (!st->over)
          call->cancel = true;
        else
          recordLatency();
      });
}

std::string metricsText(Server &srv, int64_t maxBatch) {
  Metrics &m = *srv.metrics;
  int64_t queued = srv.engine->queued();
  std::lock_guard<std::mutex> l(m.mu);
  std::string out;
  out += "# HELP moe_serve_requests_total HTTP requests answered, by path and status.\n"
         "# TYPE moe_serve_requests_total counter\n";
  for (const auto &[key, count] : m.requests)
    out += fmt::format("moe_serve_requests_total{{path=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, count);
  auto one = [&](const char *name, const char *type, const char *help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  one("moe_serve_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.",
      m.promptTokens);
  one("moe_serve_generation_tokens_total", "counter", "Tokens generated.", m.generatedTokens);
  one("moe_serve_cancelled_sequences_total", "counter",
      "Sequences cancelled (client gone or shutdown).", m.cancelled);
  one("moe_serve_preemptions_total", "counter",
      "Sequences preempted for KV pages (requeued, recomputed when readmitted).",
      m.preemptions);
  one("moe_serve_queue_length", "gauge", "Sequences waiting for a batch slot.", queued);
  one("moe_serve_running_sequences", "gauge", "Sequences in the batch after the last step.",
      m.running);
  one("moe_serve_max_batch", "gauge", "Sequences per step at most.", maxBatch);
  one("moe_serve_batch_occupancy", "gauge", "Running sequences / max_batch after the last step.",
      double(m.running) / double(maxBatch));
  one("moe_serve_engine_steps_total", "counter", "Engine steps (forward calls).", m.steps);
  one("moe_serve_engine_sequence_steps_total", "counter",
      "Sum over steps of running sequences (mean occupancy = this / steps / max_batch).",
      m.sequenceSteps);
  m.ttft.print(out, "moe_serve_time_to_first_token_seconds",
               "Seconds from a request's arrival to its first token.");
  m.latency.print(out, "moe_serve_request_latency_seconds",
                  "Seconds from a completion request's arrival to its last byte.");
  return out;
}

/// SIGTERM/SIGINT: the handler only writes the signal's number to a pipe
/// (async-signal-safe) that a thread reads and stops the server from. Not
/// sigwait: threads that OpenBLAS starts before main would take the signal.
/// The ranks of a multi-rank plan run as threads of moe-serve (as moe-run
/// runs them without MPI), each an engine over its own Session, and every
/// rank's engine must be handed the same requests at the same polls and the
/// same cancellations (runBatchEngine). Rank 0's engine polls the HTTP
/// Engine through a LeaderSource, which passes each of its answers to the
/// other ranks' FollowerSources in the order it gave them; they answer the
/// same in the same order (their engines take the same steps, so they ask
/// the same questions).
/// What rank 0's engine was told (a poll's or a cancelled()'s answer), for
/// the other ranks' engines to be told the same.
struct Answer {
  bool isPoll = false; // poll()'s answer (value: still open), else cancelled()'s
  bool value = false;
  std::vector<std::pair<uint64_t, SequenceRequest>> requests; // poll's
};

/// Carries rank 0's answers to the other ranks, in order.
class AnswerChannel {
public:
  virtual ~AnswerChannel() = default;
  virtual void publish(const Answer &a) = 0;
  /// The next answer for follower `follower` (rank follower + 1 here).
  virtual Answer next(int follower) = 0;
};

/// Ranks as threads of this process: a queue per follower.
class RankMirror final : public AnswerChannel {
public:
  explicit RankMirror(int followers) : queues_(size_t(followers)) {}
  void publish(const Answer &a) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto &q : queues_)
        q.push_back(a);
    }
    cv_.notify_all();
  }
  Answer next(int follower) override {
    std::unique_lock<std::mutex> l(mu_);
    auto &q = queues_[size_t(follower)];
    cv_.wait(l, [&] { return !q.empty(); });
    Answer a = std::move(q.front());
    q.pop_front();
    return a;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<Answer>> queues_;
};

/// Ranks as processes (mpirun): rank 0 broadcasts each answer, its size
/// first, over the plan's communicator; the engine threads of all ranks make
/// these broadcasts at the same points of their steps, between the steps'
/// collectives. A request's stop check is rebuilt from its stop strings with
/// this process's tokenizer.
class MpiChannel final : public AnswerChannel {
public:
  MpiChannel(Comm &comm, const Tokenizer *tokenizer) : comm_(comm), tokenizer_(tokenizer) {}
  void publish(const Answer &a) override {
    std::vector<uint8_t> bytes = encode(a);
    uint64_t n = bytes.size();
    comm_.broadcast(&n, sizeof n, 0, {});
    comm_.broadcast(bytes.data(), n, 0, {});
  }
  Answer next(int) override {
    uint64_t n = 0;
    comm_.broadcast(&n, sizeof n, 0, {});
    std::vector<uint8_t> bytes(n);
    comm_.broadcast(bytes.data(), n, 0, {});
    return decode(bytes);
  }

private:
  struct Writer {
    std::vector<uint8_t> out;
    template <typename T> void put(T v) {
      const auto *p = reinterpret_cast<const uint8_t *>(&v);
      out.insert(out.end(), p, p + sizeof v);
    }
    void ids(const std::vector<int64_t> &v) {
      put(uint64_t(v.size()));
      for (int64_t x : v)
        put(x);
    }
    void str(const std::string &v) {
      put(uint64_t(v.size()));
      out.insert(out.end(), v.begin(), v.end());
    }
  };
  struct Reader {
    const std::vector<uint8_t> &in;
    size_t at = 0;
    template <typename T> T get() {
      if (in.size() - at < sizeof(T))
        fail("internal: a request broadcast from rank 0 ends early");
      T v;
      std::memcpy(&v, in.data() + at, sizeof v);
      at += sizeof v;
      return v;
    }
    uint64_t count(size_t elemBytes) {
      uint64_t n = get<uint64_t>();
      if (n > (in.size() - at) / elemBytes)
        fail("internal: a request broadcast from rank 0 ends early");
      return n;
    }
    std::vector<int64_t> ids() {
      std::vector<int64_t> v(count(8));
      for (int64_t &x : v)
        x = get<int64_t>();
      return v;
    }
    std::string str() {
      uint64_t n = count(1);
      std::string v(reinterpret_cast<const char *>(in.data() + at), n);
      at += n;
      return v;
    }
  };

  static std::vector<uint8_t> encode(const Answer &a) {
    Writer w;
    w.put(uint8_t(a.isPoll));
    w.put(uint8_t(a.value));
    w.put(uint64_t(a.requests.size()));
    for (const auto &[tag, r] : a.requests) {
      w.put(tag);
      w.ids(r.prompt);
      w.put(r.maxNewTokens);
      w.put(r.temperature);
      w.put(r.topP);
      w.put(r.seed);
      w.put(uint8_t(r.stopAtEos));
      w.ids(r.eosIds);
      w.put(uint64_t(r.stopIds.size()));
      for (const auto &ids : r.stopIds)
        w.ids(ids);
      w.put(uint64_t(r.stopStrings.size()));
      for (const std::string &st : r.stopStrings)
        w.str(st);
    }
    return std::move(w.out);
  }

  Answer decode(const std::vector<uint8_t> &bytes) const {
    Reader rd{bytes};
    Answer a;
    a.isPoll = rd.get<uint8_t>() != 0;
    a.value = rd.get<uint8_t>() != 0;
    for (uint64_t i = 0, n = rd.count(8); i < n; ++i) {
      uint64_t tag = rd.get<uint64_t>();
      SequenceRequest r;
      r.prompt = rd.ids();
      r.maxNewTokens = rd.get<int64_t>();
      r.temperature = rd.get<float>();
      r.topP = rd.get<float>();
      r.seed = rd.get<uint64_t>();
      r.stopAtEos = rd.get<uint8_t>() != 0;
      r.eosIds = rd.ids();
      for (uint64_t k = 0, m = rd.count(8); k < m; ++k)
        r.stopIds.push_back(rd.ids());
      for (uint64_t k = 0, m = rd.count(8); k < m; ++k)
        r.stopStrings.push_back(rd.str());
      if (!r.stopStrings.empty()) {
        if (!tokenizer_)
          fail("rank {}: a request with stop strings, and this rank has no tokenizer "
               "(expected the same tokenizer on every rank)",
               comm_.rank());
        r.stopCheck = stopStringCheck(tokenizer_, r.stopStrings);
      }
      a.requests.emplace_back(tag, std::move(r));
    }
    return a;
  }

  Comm &comm_;
  const Tokenizer *tokenizer_;
};

class LeaderSource final : public RequestSource {
public:
  LeaderSource(RequestSource &inner, AnswerChannel &mirror) : inner_(inner), mirror_(mirror) {}
  bool poll(std::vector<std::pair<uint64_t, SequenceRequest>> &out, bool idle) override {
    size_t from = out.size();
    Answer a;
    a.isPoll = true;
    a.value = inner_.poll(out, idle);
    a.requests.assign(out.begin() + std::ptrdiff_t(from), out.end());
    mirror_.publish(a);
    return a.value;
  }
  bool cancelled(uint64_t tag) override {
    Answer a;
    a.value = inner_.cancelled(tag);
    mirror_.publish(a);
    return a.value;
  }
  void onToken(uint64_t tag, int64_t token) override { inner_.onToken(tag, token); }
  void onPreempted(uint64_t tag) override { inner_.onPreempted(tag); }
  void onFinish(uint64_t tag, SequenceResult result) override {
    inner_.onFinish(tag, std::move(result));
  }
  void onStep(int64_t running, int64_t queued) override { inner_.onStep(running, queued); }

private:
  RequestSource &inner_;
  AnswerChannel &mirror_;
};

class FollowerSource final : public RequestSource {
public:
  FollowerSource(AnswerChannel &mirror, int follower) : mirror_(mirror), follower_(follower) {}
  bool poll(std::vector<std::pair<uint64_t, SequenceRequest>> &out, bool) override {
    Answer a = next(true);
    for (auto &r : a.requests)
      out.push_back(std::move(r));
    return a.value;
  }
  bool cancelled(uint64_t) override { return next(false).value; }
  void onFinish(uint64_t, SequenceResult) override {}

private:
  Answer next(bool poll) {
    Answer a = mirror_.next(follower_);
    if (a.isPoll != poll)
      fail("internal: rank {} asked {} where rank 0 asked {}", follower_ + 1,
           poll ? "poll" : "cancelled", a.isPoll ? "poll" : "cancelled");
    return a;
  }
  AnswerChannel &mirror_;
  int follower_;
};

int gSignalPipe[2] = {-1, -1};

extern "C" void onStopSignal(int sig) {
  unsigned char b = (unsigned char)sig;
  ssize_t ignored = ::write(gSignalPipe[1], &b, 1);
  (void)ignored;
}

int serve(const Options &o) {
  if (::pipe(gSignalPipe) != 0)
    fail("cannot create a pipe for signals: {}", std::strerror(errno));
  std::signal(SIGTERM, onStopSignal);
  std::signal(SIGINT, onStopSignal);
  PlanFile plan = PlanFile::load(o.plan);
  const plan::Plan &p = plan.plan();
  std::string target = p.target() == plan::Target::CUDA ? "cuda" : "cpu";
  std::string backendName = o.backend.empty() ? target : o.backend;
  // Sequences at once: max_batch in each data-parallel group.
  const int64_t capacity = plan.maxBatch() * plan.dataParallel();
  if (o.maxBatch > capacity)
    fail("--max-batch={}: more than the plan's {} sequences at once (max_batch {} x {} "
         "data-parallel groups; expected a plan compiled with a larger moe-compile --max-batch)",
         o.maxBatch, capacity, plan.maxBatch(), plan.dataParallel());
  Server srv;
  srv.plan = &plan;
  srv.model = !o.modelName.empty() ? o.modelName
              : p.model()->name() && p.model()->name()->size() ? p.model()->name()->str()
                                                               : "moe";
  try {
    srv.tokenizer = loadTokenizer(o.tokenizer, o.weights, plan, "--tokenizer");
  } catch (const Error &e) {
    if (!o.tokenizer.empty())
      throw; // an explicit --tokenizer that does not load is an error
    srv.tokenizerWhy = e.what();
  }
  srv.eosIds = generationEosIds(o.weights, plan);

  // The ranks of the plan: under mpirun one per process (rank 0 answers
  // HTTP, the others follow its engine), else all in this process as
  // threads with in-process comms, as moe-run runs them without MPI.
  std::vector<std::unique_ptr<Comm>> comms;
#ifdef MOERT_HAVE_MPI
  if (launchedByMpi())
    comms.push_back(makeMpiComm());
#endif
  const bool mpi = !comms.empty() && comms.front()->size() > 1;
  if (!comms.empty() && comms.front()->size() != plan.numRanks())
    fail("{}: plan was compiled for {} rank(s) but runs on {} (expected mpirun -np {})", o.plan,
         plan.numRanks(), comms.front()->size(), plan.numRanks());
  const int firstRank = mpi ? comms.front()->rank() : 0;
  const int ranks = mpi ? 1 : plan.numRanks(); // in this process
  BackendOptions bo;
  bo.threads = o.threads > 0
                   ? int(o.threads)
                   : std::max(1, int(std::thread::hardware_concurrency()) / plan.numRanks());
  if (comms.empty()) {
    if (ranks > 1)
      comms = makeInProcessComms(ranks);
    else
      comms.push_back(makeLocalComm());
  }
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<WeightStore>> weights;
  std::vector<std::unique_ptr<Session>> sessions;
  for (int r = 0; r < ranks; ++r) {
    backends.push_back(makeBackend(backendName, bo));
    weights.push_back(loadWeights(plan, o.weights, o.randomWeights, /*seed=*/0,
                                  {firstRank + r}, *backends.back()));
    sessions.push_back(std::make_unique<Session>(plan, firstRank + r, *weights.back(),
                                                 *comms[size_t(r)], *backends.back(),
                                                 SessionOptions{}));
  }
  const int64_t maxBatch = o.maxBatch > 0 ? o.maxBatch : capacity;
  BatchOptions opts;
  // The engine's slots are per data-parallel group.
  opts.maxBatch = (maxBatch + plan.dataParallel() - 1) / plan.dataParallel();
  opts.prefillChunk = o.prefillChunk;
  MpiChannel mpiChannel(*comms.front(), srv.tokenizer.get());
  if (mpi && firstRank > 0) {
    // A follower process: no HTTP; its engine replays rank 0's answers and
    // ends when rank 0's does. mpirun passes SIGTERM to every process: rank
    // 0 drains and tells the others.
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    FollowerSource follower(mpiChannel, firstRank - 1);
    try {
      runBatchEngine(*sessions.front(), *comms.front(), follower, opts);
    } catch (const std::exception &e) {
      // Rank 0 waits in a collective: leave without unwinding it.
      std::fprintf(stderr, "error: engine: rank %d: %s\n", firstRank, e.what());
      std::fflush(stderr);
      std::_Exit(1);
    }
    return 0;
  }

  Metrics metrics;
  Engine engine(metrics, o.maxQueue, maxBatch);
  srv.engine = &engine;
  srv.metrics = &metrics;


  std::string engineError;
  RankMirror mirror(ranks - 1);
  LeaderSource leader(engine, mpi ? static_cast<AnswerChannel &>(mpiChannel)
                                  : static_cast<AnswerChannel &>(mirror));
  std::vector<std::unique_ptr<FollowerSource>> followers;
  for (int r = 1; r < ranks; ++r)
    followers.push_back(std::make_unique<FollowerSource>(mirror, r - 1));
  // The engine of one rank: rank 0's polls the HTTP engine (through the
  // leader when there are other ranks), the others replay its answers.
  auto engineMain = [&](int r) {
    RequestSource &source = r > 0                ? *followers[size_t(r - 1)]
                            : ranks > 1 || mpi ? static_cast<RequestSource &>(leader)
                                               : static_cast<RequestSource &>(engine);
    try {
      runBatchEngine(*sessions[size_t(r)], *comms[size_t(r)], source, opts);
    } catch (const std::exception &e) {
      if (ranks > 1 || mpi) {
        // The other ranks wait in collectives: leave without unwinding them.
        std::fprintf(stderr, "error: engine: rank %d: %s\n", r, e.what());
        std::fflush(stderr);
        std::_Exit(1);
      }
      engineError = e.what();
      std::fprintf(stderr, "error: engine: %s\n", e.what());
      engine.failAll(fmt::format("the engine failed: {}", e.what()));
    }
  };
  std::vector<std::thread> rankThreads;
  for (int r = 1; r < ranks; ++r)
    rankThreads.emplace_back(engineMain, r);
  std::thread engineThread(engineMain, 0);
  auto joinEngines = [&] {
    engineThread.join();
    for (std::thread &t : rankThreads)
      t.join();
  };

  httplib::Server http;
  // Every HTTP thread mostly waits for tokens: enough of them that a full
  // queue and a full batch are all being answered (the rest wait in the
  // accept queue).
  size_t httpThreads = size_t(std::min<int64_t>(o.maxQueue + maxBatch + 8, 512));
  http.new_task_queue = [httpThreads] { return new httplib::ThreadPool(httpThreads); };
  http.set_payload_max_length(size_t(1) << 20);
  // Headers and body go out in separate writes: with Nagle's algorithm the
  // body waits for the client's delayed ACK (~40 ms a response).
  http.set_tcp_nodelay(true);
  // An idle keep-alive connection holds its thread this long after SIGTERM
  // too (httplib checks for stop between requests): short, within the 10 s.
  http.set_keep_alive_timeout(2);
  // httplib closes a connection after 5 requests by default: a client that
  // keeps its connection (as OpenAI's do) would reconnect every 5 answers.
  http.set_keep_alive_max_count(100000);
  // httplib listens with a backlog of 5: a burst of new connections (16
  // clients at once) overflows it, and a dropped SYN is retried after 1 s.
  // listen() again on the bound socket raises the backlog (Linux).
  int listenFd = -1;
  // httplib's default options set SO_REUSEPORT, with which a second server
  // binds the same port silently and the kernel splits connections between
  // the two: SO_REUSEADDR alone (a restart need not wait for TIME_WAIT)
  // makes a taken port the one-line error below.
  http.set_socket_options([&listenFd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listenFd = sock;
  });
  auto json400 = [](httplib::Response &res, const ApiError &e) { sendError(res, e); };
  auto guarded = [&](auto fn) {
    return [&, fn](const httplib::Request &req, httplib::Response &res) {
      try {
        fn(req, res);
      } catch (const ApiError &e) {
        json400(res, e);
      } catch (const std::exception &e) {
        sendError(res, {500, fmt::format("internal error: {}", e.what()), "", "server_error"});
      }
    };
  };
  http.Post("/v1/completions", guarded([&](const httplib::Request &req, httplib::Response &res) {
              handleCompletions(srv, req, res);
            }));
  http.Post("/v1/chat/completions", [](const httplib::Request &, httplib::Response &res) {
    sendError(res, {404,
                    "/v1/chat/completions is not served: chat templates need a Jinja "
                    "implementation, and no maintained C++ one is packaged (expected "
                    "/v1/completions with the prompt already templated; docs/serving.md)",
                    "", "not_found_error"});
  });
  http.Get("/v1/models", [&](const httplib::Request &, httplib::Response &res) {
    ojson m;
    m["id"] = srv.model;
    m["object"] = "model";
    m["created"] = 0;
    m["owned_by"] = "moe-compiler";
    m["max_model_len"] = plan.maxPositions();
    ojson out;
    out["object"] = "list";
    out["data"] = ojson::array({m});
    res.set_content(dumpJson(out), "application/json");
  });
  http.Get("/health", [](const httplib::Request &, httplib::Response &res) {
    res.set_content("", "text/plain");
  });
  http.Get("/metrics", [&](const httplib::Request &, httplib::Response &res) {
    res.set_content(metricsText(srv, maxBatch), "text/plain; version=0.0.4");
  });
  // The known paths answer other methods with 405 (unknown paths are 404).
  auto notAllowed = [](const char *allowed) {
    return [allowed](const httplib::Request &req, httplib::Response &res) {
      res.set_header("Allow", allowed);
      sendError(res, {405, fmt::format("{} {}: method not allowed (expected {})", req.method,
                                       req.path, allowed),
                      "", "invalid_request_error"});
    };
  };
  for (const char *path : {"/v1/completions", "/v1/chat/completions"}) {
    http.Get(path, notAllowed("POST"));
    http.Put(path, notAllowed("POST"));
    http.Delete(path, notAllowed("POST"));
  }
  for (const char *path : {"/v1/models", "/health", "/metrics"}) {
    http.Post(path, notAllowed("GET"));
    http.Put(path, notAllowed("GET"));
    http.Delete(path, notAllowed("GET"));
  }
  http.set_error_handler([](const httplib::Request &req, httplib::Response &res) {
    if (!res.body.empty())
      return; // a handler's own error answer
    if (res.status == 404)
      sendError(res, {404, fmt::format("{} {}: no such endpoint (expected /v1/completions, "
                                       "/v1/models, /health or /metrics)",
                                       req.method, req.path),
                      "", "not_found_error"});
    else if (res.status == 413)
      sendError(res, {413, "the request body is over the 1 MiB limit", "",
                      "invalid_request_error"});
    else
      sendError(res, {res.status, fmt::format("{} {}: HTTP {}", req.method, req.path, res.status),
                      "", "invalid_request_error"});
  });
  http.set_logger([&](const httplib::Request &req, const httplib::Response &res) {
    std::lock_guard<std::mutex> l(metrics.mu);
    // Unknown paths share one label: a client must not grow the table.
    static const char *known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                  "/health", "/metrics"};
    std::string path = "other";
    for (const char *k : known)
      if (req.path == k)
        path = k;
    ++metrics.requests[{path, res.status}];
  });

  int port = int(o.port);
  if (port == 0)
    port = http.bind_to_any_port(o.host);
  else if (!http.bind_to_port(o.host, port))
    port = -1;
  if (port >= 0 && listenFd >= 0 && ::listen(listenFd, SOMAXCONN) != 0)
    port = -1;
  if (port < 0) {
    engine.stop();
    joinEngines();
    fail("{}:{}: cannot listen (expected a free port and a local address)", o.host, o.port);
  }
  std::printf("moe-serve: listening on http://%s:%d\n", o.host.c_str(), port);
  std::fflush(stdout);

  std::atomic<bool> stopping{false}, listenReturned{false};
  std::mutex drainMu;
  std::condition_variable drainCv;
  bool engineDone = false;
  std::thread signalThread([&] {
    unsigned char sig = 0;
    while (::read(gSignalPipe[0], &sig, 1) < 0 && errno == EINTR)
      ;
    stopping = true;
    if (listenReturned)
      return; // woken by main below
    std::fprintf(stderr, "moe-serve: %s: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    engine.stop();
    {
      // Running requests get --drain-seconds to finish, then are cancelled.
      std::unique_lock<std::mutex> l(drainMu);
      if (!drainCv.wait_for(l, std::chrono::duration<double>(o.drainSeconds),
                            [&] { return engineDone; }))
        engine.cancelAll();
    }
  });
  std::thread stopper([&] {
    // Stop accepting once a signal came; listen_after_bind returns when
    // every handler is done. A stop() before listening starts would be lost.
    while (!stopping || (!http.is_running() && !listenReturned))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    http.stop();
  });
  http.listen_after_bind();
  listenReturned = true;
  if (!stopping) // listening failed by itself: wake the signal thread
    onStopSignal(0);
  engine.stop();
  joinEngines();
  {
    std::lock_guard<std::mutex> l(drainMu);
    engineDone = true;
  }
  drainCv.notify_all();
  signalThread.join();
  stopper.join();
  return engineError.empty() ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  Options o;
  try {
    o = parseArgs(argc, argv);
  } catch (const Error &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (o.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (o.version) {
    std::printf("moe-serve %s (plan format %u.%u)\n", kProjectVersion, kPlanVersionMajor,
                kPlanVersionMinor);
    return 0;
  }
  try {
    return serve(o);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
