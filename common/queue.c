/*
 * queue — the reliable job queue on Redis lists. See queue.h and docs/common/queue.md.
 *
 * Multi-key moves (requeue, reap, promote) are Lua scripts: Redis runs a script
 * as one command, so no other client sees a half-moved state. Scripts are sent
 * with EVALSHA and fall back to EVAL when the server answers NOSCRIPT (after a
 * restart or SCRIPT FLUSH).
 */
#include "queue.h"

#include "errbuf.h"
#include "log.h"
#include "now.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKER_ID_MAX 100
#define KEY_MAX 160

/*
 * The fair queue's scripts share this prelude (docs/common/queue.md "Fair
 * scheduling"). An item held by a worker or delayed is "<job_id> <tier> <user_id>";
 * a bare id belongs to the legacy pseudo user "_" (the list ca:jobs, tier free).
 */
#define PRELUDE                                                                                    \
    "local P = 'ca:jobs:'\n"                                                                       \
    "local LEGACY = 'ca:jobs'\n"                                                                   \
    "local TIERS = {'studio', 'creator', 'free'}\n"                                                \
    "local function tier_of(t)\n"                                                                  \
    "  if t == 'studio' or t == 'creator' then return t end\n"                                     \
    "  return 'free'\n"                                                                            \
    "end\n"                                                                                        \
    "local function ulist(u)\n"                                                                    \
    "  if u == '_' then return LEGACY end\n"                                                       \
    "  return P .. 'u:' .. u\n"                                                                    \
    "end\n"                                                                                        \
    "local function wake()\n"                                                                      \
    "  redis.call('LPUSH', P .. 'wake', '1')\n"                                                    \
    "  redis.call('LTRIM', P .. 'wake', 0, 63)\n"                                                  \
    "end\n"                                                                                        \
    "local function ring_add(tier, u)\n"                                                           \
    "  local ring = P .. 'ready:' .. tier\n"                                                       \
    "  if not redis.call('LPOS', ring, u) then redis.call('RPUSH', ring, u) end\n"                 \
    "end\n"                                                                                        \
    "local function parse(item)\n"                                                                 \
    "  local id, t, u = string.match(item, '^(%S+) (%S+) (%S+)$')\n"                               \
    "  if id == nil then return item, 'free', '_' end\n"                                           \
    "  return id, tier_of(t), u\n"                                                                 \
    "end\n"                                                                                        \
    "local function item_of(id, t, u)\n"                                                           \
    "  if u == '_' then return id end\n"                                                           \
    "  return id .. ' ' .. t .. ' ' .. u\n"                                                        \
    "end\n"                                                                                        \
    "local function put(id, t, u, front)\n"                                                        \
    "  local list = ulist(u)\n"                                                                    \
    "  if front then redis.call('RPUSH', list, id) else redis.call('LPUSH', list, id) end\n"       \
    "  if redis.call('LLEN', list) == 1 then ring_add(t, u) end\n"                                 \
    "  wake()\n"                                                                                   \
    "end\n"                                                                                        \
    "local function release(u)\n"                                                                  \
    "  if u == '_' then return end\n"                                                              \
    "  local n = redis.call('HINCRBY', P .. 'inflight', u, -1)\n"                                  \
    "  if n <= 0 then redis.call('HDEL', P .. 'inflight', u) end\n"                                \
    "  if redis.call('LLEN', ulist(u)) > 0 then wake() end\n"                                      \
    "end\n"                                                                                        \
    "local function unhold(proc, id)\n"                                                            \
    "  for _, it in ipairs(redis.call('LRANGE', proc, 0, -1)) do\n"                                \
    "    local jid, t, u = parse(it)\n"                                                            \
    "    if jid == id then\n"                                                                      \
    "      redis.call('LREM', proc, 1, it)\n"                                                      \
    "      release(u)\n"                                                                           \
    "      return it\n"                                                                            \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return nil\n"                                                                               \
    "end\n"

/*
 * Push: ARGV[1] id, ARGV[2] tier, ARGV[3] user ("_": legacy). New ids wait at
 * the left of the user's list.
 */
static const char PUSH_SCRIPT[] = PRELUDE "put(ARGV[1], tier_of(ARGV[2]), ARGV[3], false)\n"
                                          "return 1\n";

/*
 * Take (and optionally ack first): ARGV[1] processing key, ARGV[2] per-user
 * in-flight cap, ARGV[3..5] weights of studio, creator, free, ARGV[6] the id to
 * ack first or ''. Returns the bare id taken, or nil.
 */
static const char TAKE_SCRIPT[] = PRELUDE
    "local proc, cap = ARGV[1], tonumber(ARGV[2])\n"
    "local w = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}\n"
    "if ARGV[6] ~= '' then unhold(proc, ARGV[6]) end\n"
    "if redis.call('LLEN', LEGACY) > 0 then ring_add('free', '_') end\n"
    "local function pop_user(tier)\n"
    "  local ring = P .. 'ready:' .. tier\n"
    "  for k = 1, redis.call('LLEN', ring) do\n"
    "    local u = redis.call('LPOP', ring)\n"
    "    local list = ulist(u)\n"
    "    if redis.call('LLEN', list) > 0 then\n"
    "      if u ~= '_' and tonumber(redis.call('HGET', P .. 'inflight', u) or '0') >= cap then\n"
    "        redis.call('RPUSH', ring, u)\n"
    "      else\n"
    "        local id = redis.call('RPOP', list)\n"
    "        if redis.call('LLEN', list) > 0 then redis.call('RPUSH', ring, u) end\n"
    "        return u, id\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return nil, nil\n"
    "end\n"
    "local S = P .. 'sched'\n"
    "for attempt = 1, 100 do\n"
    "  local raw = redis.call('HMGET', S, 'studio', 'creator', 'free')\n"
    "  local c, el = {}, {}\n"
    "  for i = 1, 3 do\n"
    "    c[i] = tonumber(raw[i])\n"
    "    el[i] = redis.call('LLEN', P .. 'ready:' .. TIERS[i]) > 0\n"
    "  end\n"
    /* a tier back from idle (no counter) is served at this take, once, like
     * fq_codel's new flows; several at once in tier order */
    "  local u, id, best, fresh = nil, nil, nil, false\n"
    "  for i = 1, 3 do\n"
    "    if u == nil and el[i] and c[i] == nil then\n"
    "      u, id = pop_user(TIERS[i])\n"
    "      if u then best, fresh = i, true else el[i] = false end\n"
    "    end\n"
    "  end\n"
    /* then smooth weighted round robin between the busy tiers */
    "  local total = 0\n"
    "  while u == nil do\n"
    "    best, total = nil, 0\n"
    "    for i = 1, 3 do\n"
    "      if el[i] then\n"
    "        total = total + w[i]\n"
    "        if best == nil or c[i] + w[i] > c[best] + w[best] then best = i end\n"
    "      end\n"
    "    end\n"
    "    if best == nil then break end\n"
    "    u, id = pop_user(TIERS[best])\n"
    "    if u == nil then el[best] = false end\n"
    "  end\n"
    "  if u == nil then\n"
    "    for i = 1, 3 do\n"
    "      if redis.call('LLEN', P .. 'ready:' .. TIERS[i]) == 0 then redis.call('HDEL', S, "
    "TIERS[i]) end\n"
    "    end\n"
    "    return false\n"
    "  end\n"
    "  if fresh then\n"
    "    c[best] = 0\n"
    "  else\n"
    "    for i = 1, 3 do if el[i] then c[i] = c[i] + w[i] end end\n"
    "    c[best] = c[best] - total\n"
    "  end\n"
    "  for i = 1, 3 do\n"
    "    if redis.call('LLEN', P .. 'ready:' .. TIERS[i]) == 0 then redis.call('HDEL', S, "
    "TIERS[i])\n"
    "    elseif i == best or (el[i] and not fresh) then redis.call('HSET', S, TIERS[i], c[i]) end\n"
    "  end\n"
    "  if #id < 128 and not string.find(id, '[%s%c]') then\n"
    "    redis.call('LPUSH', proc, item_of(id, TIERS[best], u))\n"
    "    if u ~= '_' then redis.call('HINCRBY', P .. 'inflight', u, 1) end\n"
    "    return id\n"
    "  end\n"
    "  redis.log(redis.LOG_WARNING, 'queue: dropped an invalid job id of ' .. #id .. ' bytes')\n"
    "end\n"
    "return false\n";

/* Ack: ARGV[1] processing key, ARGV[2] id. Returns 1 if held, else 0. */
static const char ACK_SCRIPT[] = PRELUDE "if unhold(ARGV[1], ARGV[2]) then return 1 end\n"
                                         "return 0\n";

/*
 * Delay a held id: ARGV[1] processing key, ARGV[2] id, ARGV[3] due ms. The
 * item (with its owner) moves to ca:jobs:delayed; an id not held is delayed
 * bare. Returns 1 if it was held.
 */
static const char DELAY_HELD_SCRIPT[] =
    PRELUDE "local it = unhold(ARGV[1], ARGV[2])\n"
            "local member = ARGV[2]\n"
            "if it then local id, t, u = parse(it) member = item_of(id, t, u) end\n"
            "redis.call('ZADD', P .. 'delayed', ARGV[3], member)\n"
            "if it then return 1 end\n"
            "return 0\n";

/*
 * Moves every item of a processing list back to its user's list (at the taking
 * end) and forgets the worker.
 *   KEYS[1] ca:worker:<id>   KEYS[2] ca:jobs:processing:<id>   KEYS[3] ca:workers
 *   ARGV[1] <id>             ARGV[2] "1": only if the heartbeat is gone
 * Returns -1 when the worker is alive (nothing changed), else the count moved.
 * Items are walked newest first and each goes to the right end (the end
 * workers take from), so the item taken first is taken next.
 */
static const char REQUEUE_SCRIPT[] =
    PRELUDE "if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end\n"
            "local items = redis.call('LRANGE', KEYS[2], 0, -1)\n"
            "for _, it in ipairs(items) do\n"
            "  local id, t, u = parse(it)\n"
            "  release(u)\n"
            "  put(id, t, u, true)\n"
            "end\n"
            "redis.call('DEL', KEYS[2])\n"
            "redis.call('SREM', KEYS[3], ARGV[1])\n"
            "return #items\n";

/*
 * Moves up to ARGV[2] items with score <= ARGV[1] from ca:jobs:delayed to the
 * back of their users' lists, earliest due first.
 */
static const char PROMOTE_SCRIPT[] =
    PRELUDE "local ids = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', ARGV[1], 'LIMIT', 0, "
            "ARGV[2])\n"
            "for _, m in ipairs(ids) do\n"
            "  local id, t, u = parse(m)\n"
            "  put(id, t, u, false)\n"
            "  redis.call('ZREM', P .. 'delayed', m)\n"
            "end\n"
            "return #ids\n";

/*
 * Pushes the (id, user, tier) triples of ARGV whose id is in neither its
 * user's list, the legacy list nor the delayed set. Returns the count pushed.
 */
static const char REPUSH_SCRIPT[] =
    PRELUDE "local seen = {}\n"
            "local function present(u, id)\n"
            "  if seen[u] == nil then\n"
            "    seen[u] = {}\n"
            "    for _, v in ipairs(redis.call('LRANGE', ulist(u), 0, -1)) do seen[u][v] = true "
            "end\n"
            "  end\n"
            "  return seen[u][id]\n"
            "end\n"
            "local pushed = 0\n"
            "for i = 1, #ARGV - 2, 3 do\n"
            "  local id, u, t = ARGV[i], ARGV[i + 1], tier_of(ARGV[i + 2])\n"
            "  if not present(u, id) and not present('_', id)\n"
            "     and not redis.call('ZSCORE', P .. 'delayed', item_of(id, t, u))\n"
            "     and not redis.call('ZSCORE', P .. 'delayed', id) then\n"
            "    put(id, t, u, false)\n"
            "    seen[u][id] = true\n"
            "    pushed = pushed + 1\n"
            "  end\n"
            "end\n"
            "return pushed\n";

/* Ids waiting: the lists of every ring member, plus ca:jobs when not a member. */
static const char DEPTH_SCRIPT[] =
    PRELUDE "local total, legacy = 0, false\n"
            "for _, t in ipairs(TIERS) do\n"
            "  for _, u in ipairs(redis.call('LRANGE', P .. 'ready:' .. t, 0, -1)) do\n"
            "    if u == '_' then legacy = true end\n"
            "    total = total + redis.call('LLEN', ulist(u))\n"
            "  end\n"
            "end\n"
            "if not legacy then total = total + redis.call('LLEN', LEGACY) end\n"
            "return total\n";

static bool worker_id_valid(const char *worker_id)
{
    size_t len;

    if (worker_id == NULL) {
        return false;
    }
    len = strlen(worker_id);
    if (len == 0 || len > WORKER_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = worker_id[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';

        if (!ok) {
            return false;
        }
    }
    return true;
}

static int check_worker_id(const char *worker_id, char *err, size_t errlen)
{
    if (!worker_id_valid(worker_id)) {
        errbuf_set(err, errlen, "queue: invalid worker id (1-%d of [A-Za-z0-9._:-])",
                   WORKER_ID_MAX);
        return -1;
    }
    return 0;
}

static int check_job_id(const char *id, char *err, size_t errlen)
{
    size_t len = id == NULL ? 0 : strlen(id);

    if (len == 0 || len >= QUEUE_ID_MAX) {
        errbuf_set(err, errlen, "queue: job id must be 1-%d bytes", QUEUE_ID_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)id[i] <= ' ' || id[i] == 0x7f) {
            errbuf_set(err, errlen, "queue: job id contains whitespace or control characters");
            return -1;
        }
    }
    return 0;
}

static void key_for(char *key, size_t keylen, const char *prefix, const char *worker_id)
{
    snprintf(key, keylen, "%s%s", prefix, worker_id);
}

static int sha1_hex(const char *text, char out[41])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;

    if (EVP_Digest(text, strlen(text), digest, &digest_len, EVP_sha1(), NULL) != 1 ||
        digest_len != 20) {
        return -1;
    }
    for (unsigned int i = 0; i < digest_len; i++) {
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
    out[40] = '\0';
    return 0;
}

/* EVALSHA, then EVAL on NOSCRIPT: the reply, or NULL with err. argv has room
 * for 3 + nkeys + nargs entries (the caller's, reused). */
static redisReply *script_reply(redis_conn_t *r, const char *script, int nkeys, const char **keys,
                                int nargs, const char **args, const char **argv, char *err,
                                size_t errlen)
{
    char sha[41];
    char nkeys_text[8];
    redisReply *reply;
    int argc = 0;

    if (sha1_hex(script, sha) != 0) {
        errbuf_set(err, errlen, "queue: cannot prepare the script");
        return NULL;
    }
    snprintf(nkeys_text, sizeof(nkeys_text), "%d", nkeys);
    argv[argc++] = "EVALSHA";
    argv[argc++] = sha;
    argv[argc++] = nkeys_text;
    for (int i = 0; i < nkeys; i++) {
        argv[argc++] = keys[i];
    }
    for (int i = 0; i < nargs; i++) {
        argv[argc++] = args[i];
    }
    reply = redis_command_argv(r, argc, argv, NULL, err, errlen);
    if (reply == NULL && err != NULL && strncmp(err, "NOSCRIPT", 8) == 0) {
        argv[0] = "EVAL";
        argv[1] = script;
        reply = redis_command_argv(r, argc, argv, NULL, err, errlen);
    }
    return reply;
}

/* script_reply for at most 13 keys and arguments, expecting an integer reply. */
static int run_script(redis_conn_t *r, const char *script, int nkeys, const char **keys, int nargs,
                      const char **args, long long *result, char *err, size_t errlen)
{
    const char *argv[16];
    redisReply *reply;

    if (3 + nkeys + nargs > (int)(sizeof(argv) / sizeof(argv[0]))) {
        errbuf_set(err, errlen, "queue: cannot prepare the script");
        return -1;
    }
    reply = script_reply(r, script, nkeys, keys, nargs, args, argv, err, errlen);
    if (reply == NULL) {
        return -1;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        errbuf_set(err, errlen, "queue: unexpected script reply type %d", reply->type);
        freeReplyObject(reply);
        return -1;
    }
    *result = reply->integer;
    freeReplyObject(reply);
    return 0;
}

/* Runs a command whose reply only needs to be "not an error". */
static int run_argv(redis_conn_t *r, int argc, const char **argv, char *err, size_t errlen)
{
    redisReply *reply = redis_command_argv(r, argc, argv, NULL, err, errlen);

    if (reply == NULL) {
        return -1;
    }
    freeReplyObject(reply);
    return 0;
}

const char *queue_push_script(void)
{
    return PUSH_SCRIPT;
}

static queue_fair_t fair_config = {{6, 3, 1}, 4};

void queue_fair_set(const queue_fair_t *cfg)
{
    fair_config = *cfg;
}

int queue_fair_parse(const char *weights, int user_inflight_max, queue_fair_t *out, char *err,
                     size_t errlen)
{
    static const char *const names[QUEUE_TIERS] = {"studio", "creator", "free"};
    queue_fair_t cfg = {{0, 0, 0}, user_inflight_max};
    bool set[QUEUE_TIERS] = {false, false, false};
    const char *p = weights == NULL ? "" : weights;

    if (user_inflight_max < 1 || user_inflight_max > 10000) {
        errbuf_set(err, errlen, "queue: the per-user in-flight cap must be 1-10000");
        return -1;
    }
    while (*p != '\0') {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        const char *end = comma == NULL ? p + strlen(p) : comma;
        int tier = -1;
        char *num_end = NULL;
        long weight;

        if (eq == NULL || eq > end) {
            errbuf_set(err, errlen, "queue: tier weights are tier=N separated by commas");
            return -1;
        }
        for (int i = 0; i < QUEUE_TIERS; i++) {
            if ((size_t)(eq - p) == strlen(names[i]) && strncmp(p, names[i], eq - p) == 0) {
                tier = i;
            }
        }
        if (tier < 0 || set[tier]) {
            errbuf_set(err, errlen, "queue: tier weights name studio, creator and free once each");
            return -1;
        }
        weight = strtol(eq + 1, &num_end, 10);
        if (num_end != end || eq + 1 == end || weight < 1 || weight > 1000) {
            errbuf_set(err, errlen, "queue: a tier weight must be 1-1000");
            return -1;
        }
        cfg.weights[tier] = (int)weight;
        set[tier] = true;
        p = comma == NULL ? end : comma + 1;
    }
    for (int i = 0; i < QUEUE_TIERS; i++) {
        if (!set[i]) {
            errbuf_set(err, errlen, "queue: the tier weights lack %s", names[i]);
            return -1;
        }
    }
    *out = cfg;
    return 0;
}

const char *queue_tier_name(const char *tier)
{
    if (tier != NULL && (strcmp(tier, "studio") == 0 || strcmp(tier, "creator") == 0)) {
        return tier;
    }
    return "free";
}

int queue_push_user(redis_conn_t *r, const char *id, const char *user_id, const char *tier,
                    char *err, size_t errlen)
{
    const char *args[3] = {id, queue_tier_name(tier), user_id == NULL ? "_" : user_id};
    long long result = 0;

    if (check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    if (user_id != NULL && check_job_id(user_id, err, errlen) != 0) {
        errbuf_set(err, errlen, "queue: user id must be 1-%d bytes without whitespace",
                   QUEUE_ID_MAX - 1);
        return -1;
    }
    return run_script(r, PUSH_SCRIPT, 0, NULL, 3, args, &result, err, errlen);
}

int queue_push(redis_conn_t *r, const char *id, char *err, size_t errlen)
{
    return queue_push_user(r, id, NULL, NULL, err, errlen);
}

/* The id a take script answered (reply: freed here): 1 and id filled, 0 none,
 * -1 error. */
static int taken(const char *processing, redisReply *reply, char *id, size_t idlen, char *err,
                 size_t errlen)
{
    int rc = -1;
    if (reply->type == REDIS_REPLY_NIL) {
        rc = 0;
    } else if (reply->type != REDIS_REPLY_STRING) {
        errbuf_set(err, errlen, "queue: unexpected reply type %d from the take script",
                   reply->type);
    } else if (reply->len >= idlen) {
        errbuf_set(err, errlen, "queue: id buffer of %zu bytes too small (the id stays in %s)",
                   idlen, processing);
    } else {
        memcpy(id, reply->str, reply->len);
        id[reply->len] = '\0';
        rc = 1;
    }
    freeReplyObject(reply);
    return rc;
}

/* One run of TAKE_SCRIPT (acking ack_id first unless it is ""). */
static int take_once(redis_conn_t *r, const char *processing, const char *ack_id, char *id,
                     size_t idlen, char *err, size_t errlen)
{
    char cap[16];
    char w[QUEUE_TIERS][16];
    const char *args[6] = {processing, cap, w[0], w[1], w[2], ack_id};
    const char *argv[9];
    queue_fair_t cfg = fair_config;
    redisReply *reply;

    snprintf(cap, sizeof(cap), "%d", cfg.user_inflight_max);
    for (int i = 0; i < QUEUE_TIERS; i++) {
        snprintf(w[i], sizeof(w[i]), "%d", cfg.weights[i]);
    }
    reply = script_reply(r, TAKE_SCRIPT, 0, NULL, 6, args, argv, err, errlen);
    if (reply == NULL) {
        return -1;
    }
    return taken(processing, reply, id, idlen, err, errlen);
}

int queue_take(redis_conn_t *r, const char *worker_id, double timeout_s, char *id, size_t idlen,
               char *err, size_t errlen)
{
    char processing[KEY_MAX];
    int64_t deadline;

    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    if (id == NULL || idlen == 0) {
        errbuf_set(err, errlen, "queue: no buffer for the id");
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    deadline = now_mono_ms() + (int64_t)(timeout_s * 1000.0);
    for (;;) {
        char wait[32];
        int64_t left;
        const char *blpop[3] = {"BLPOP", QUEUE_WAKE, wait};
        redisReply *reply;
        int rc = take_once(r, processing, "", id, idlen, err, errlen);

        if (rc != 0) {
            return rc;
        }
        left = deadline - now_mono_ms();
        if (timeout_s < 0.001 || left < 1) {
            return 0;
        }
        /* a token pushed since the empty take is still there: no lost wake-up */
        snprintf(wait, sizeof(wait), "%.3f", (double)left / 1000.0);
        reply = redis_command_argv(r, 3, blpop, NULL, err, errlen);
        if (reply == NULL) {
            return -1;
        }
        freeReplyObject(reply);
    }
}

int queue_ack(redis_conn_t *r, const char *worker_id, const char *id, char *err, size_t errlen)
{
    char processing[KEY_MAX];
    const char *args[2] = {processing, id};
    long long held = 0;

    if (check_worker_id(worker_id, err, errlen) != 0 || check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    return run_script(r, ACK_SCRIPT, 0, NULL, 2, args, &held, err, errlen);
}

int queue_ack_take(redis_conn_t *r, const char *worker_id, const char *id, char *next,
                   size_t nextlen, char *err, size_t errlen)
{
    char processing[KEY_MAX];

    if (check_worker_id(worker_id, err, errlen) != 0 || check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    if (next == NULL || nextlen == 0) {
        errbuf_set(err, errlen, "queue: no buffer for the id");
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    return take_once(r, processing, id, next, nextlen, err, errlen);
}

int queue_delay_held(redis_conn_t *r, const char *worker_id, const char *id, int64_t due_ms,
                     char *err, size_t errlen)
{
    char processing[KEY_MAX];
    char due[32];
    const char *args[3] = {processing, id, due};
    long long held = 0;

    if (check_worker_id(worker_id, err, errlen) != 0 || check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    snprintf(due, sizeof(due), "%lld", (long long)due_ms);
    if (run_script(r, DELAY_HELD_SCRIPT, 0, NULL, 3, args, &held, err, errlen) != 0) {
        return -1;
    }
    return held == 1 ? 1 : 0;
}

int queue_repush_missing(redis_conn_t *r, int n, const char *const *ids,
                         const char *const *user_ids, const char *const *tiers, int *pushed,
                         char *err, size_t errlen)
{
    const char **args;
    const char **argv;
    redisReply *reply;
    int rc = -1;

    if (pushed != NULL) {
        *pushed = 0;
    }
    if (n < 0 || n > 10000) {
        errbuf_set(err, errlen, "queue: re-push of 0-10000 ids at a time");
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (check_job_id(ids[i], err, errlen) != 0 || check_job_id(user_ids[i], err, errlen) != 0) {
            return -1;
        }
    }
    args = calloc((size_t)n * 3, sizeof(*args));
    argv = calloc((size_t)n * 3 + 3, sizeof(*argv));
    if (args == NULL || argv == NULL) {
        errbuf_set(err, errlen, "queue: out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        args[3 * i] = ids[i];
        args[3 * i + 1] = user_ids[i];
        args[3 * i + 2] = queue_tier_name(tiers[i]);
    }
    reply = script_reply(r, REPUSH_SCRIPT, 0, NULL, 3 * n, args, argv, err, errlen);
    if (reply == NULL) {
        goto out;
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
        if (pushed != NULL) {
            *pushed = (int)reply->integer;
        }
        rc = 0;
    } else {
        errbuf_set(err, errlen, "queue: unexpected re-push reply type %d", reply->type);
    }
    freeReplyObject(reply);
out:
    free(args);
    free(argv);
    return rc;
}

int queue_heartbeat(redis_conn_t *r, const char *worker_id, int ttl_s, char *err, size_t errlen)
{
    char heartbeat[KEY_MAX];
    char now[32];
    char ttl[16];
    const char *set_argv[5] = {"SET", heartbeat, now, "EX", ttl};
    const char *sadd_argv[3] = {"SADD", QUEUE_WORKERS, worker_id};

    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    if (ttl_s < 1) {
        errbuf_set(err, errlen, "queue: heartbeat TTL must be at least 1 s");
        return -1;
    }
    snprintf(now, sizeof(now), "%lld", (long long)now_wall_ms());
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    key_for(heartbeat, sizeof(heartbeat), QUEUE_HEARTBEAT_PREFIX, worker_id);
    if (run_argv(r, 5, set_argv, err, errlen) != 0) {
        return -1;
    }
    return run_argv(r, 3, sadd_argv, err, errlen);
}

int queue_heartbeat_clear(redis_conn_t *r, const char *worker_id, char *err, size_t errlen)
{
    char heartbeat[KEY_MAX];
    const char *argv[2] = {"DEL", heartbeat};

    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    key_for(heartbeat, sizeof(heartbeat), QUEUE_HEARTBEAT_PREFIX, worker_id);
    return run_argv(r, 2, argv, err, errlen);
}

/* Runs REQUEUE_SCRIPT for one worker. *moved: -1 when alive (only_if_dead). */
static int requeue_one(redis_conn_t *r, const char *worker_id, bool only_if_dead, long long *moved,
                       char *err, size_t errlen)
{
    char heartbeat[KEY_MAX];
    char processing[KEY_MAX];
    const char *keys[3] = {heartbeat, processing, QUEUE_WORKERS};
    const char *args[2] = {worker_id, only_if_dead ? "1" : "0"};

    key_for(heartbeat, sizeof(heartbeat), QUEUE_HEARTBEAT_PREFIX, worker_id);
    key_for(processing, sizeof(processing), QUEUE_PROCESSING_PREFIX, worker_id);
    return run_script(r, REQUEUE_SCRIPT, 3, keys, 2, args, moved, err, errlen);
}

int queue_requeue_worker(redis_conn_t *r, const char *worker_id, int *moved, char *err,
                         size_t errlen)
{
    long long count = 0;

    if (moved != NULL) {
        *moved = 0;
    }
    if (check_worker_id(worker_id, err, errlen) != 0) {
        return -1;
    }
    if (requeue_one(r, worker_id, false, &count, err, errlen) != 0) {
        return -1;
    }
    if (moved != NULL) {
        *moved = (int)count;
    }
    return 0;
}

/* Reaps one candidate; adds what moved to *total. */
static int reap_one(redis_conn_t *r, const char *worker_id, long long *total, char *err,
                    size_t errlen)
{
    long long moved = 0;

    if (!worker_id_valid(worker_id)) {
        log_warn("queue: reaper skips an invalid worker id of %zu bytes", strlen(worker_id));
        return 0;
    }
    if (requeue_one(r, worker_id, true, &moved, err, errlen) != 0) {
        return -1;
    }
    if (moved > 0) {
        log_info("queue: returned %lld job(s) of dead worker %s to the queue", moved, worker_id);
        *total += moved;
    }
    return 0;
}

static bool reply_array_has(const redisReply *array, const char *value, size_t len)
{
    for (size_t i = 0; i < array->elements; i++) {
        const redisReply *e = array->element[i];

        if (e->type == REDIS_REPLY_STRING && e->len == len && memcmp(e->str, value, len) == 0) {
            return true;
        }
    }
    return false;
}

int queue_reap(redis_conn_t *r, int *returned, char *err, size_t errlen)
{
    const char *smembers[2] = {"SMEMBERS", QUEUE_WORKERS};
    redisReply *members;
    char cursor[32] = "0";
    long long total = 0;
    const size_t prefix_len = strlen(QUEUE_PROCESSING_PREFIX);
    int rc = -1;

    if (returned != NULL) {
        *returned = 0;
    }
    members = redis_command_argv(r, 2, smembers, NULL, err, errlen);
    if (members == NULL) {
        return -1;
    }
    if (members->type != REDIS_REPLY_ARRAY) {
        errbuf_set(err, errlen, "queue: unexpected SMEMBERS reply type %d", members->type);
        goto out;
    }
    for (size_t i = 0; i < members->elements; i++) {
        const redisReply *e = members->element[i];

        if (e->type == REDIS_REPLY_STRING && reap_one(r, e->str, &total, err, errlen) != 0) {
            goto out;
        }
    }

    /* Lists of workers that never made it into ca:workers (or left it). */
    do {
        const char *scan[8] = {"SCAN",  cursor, "MATCH", QUEUE_PROCESSING_PREFIX "*",
                               "COUNT", "1000", "TYPE",  "list"};
        redisReply *page = redis_command_argv(r, 8, scan, NULL, err, errlen);

        if (page == NULL) {
            goto out;
        }
        if (page->type != REDIS_REPLY_ARRAY || page->elements != 2 ||
            page->element[0]->type != REDIS_REPLY_STRING ||
            page->element[0]->len >= sizeof(cursor) ||
            page->element[1]->type != REDIS_REPLY_ARRAY) {
            errbuf_set(err, errlen, "queue: unexpected SCAN reply");
            freeReplyObject(page);
            goto out;
        }
        memcpy(cursor, page->element[0]->str, page->element[0]->len);
        cursor[page->element[0]->len] = '\0';
        for (size_t i = 0; i < page->element[1]->elements; i++) {
            const redisReply *key = page->element[1]->element[i];
            const char *worker_id;

            if (key->type != REDIS_REPLY_STRING || key->len <= prefix_len) {
                continue;
            }
            worker_id = key->str + prefix_len;
            if (reply_array_has(members, worker_id, key->len - prefix_len)) {
                continue; /* already handled above */
            }
            if (reap_one(r, worker_id, &total, err, errlen) != 0) {
                freeReplyObject(page);
                goto out;
            }
        }
        freeReplyObject(page);
    } while (strcmp(cursor, "0") != 0);
    rc = 0;

out:
    freeReplyObject(members);
    if (returned != NULL) {
        *returned = (int)total;
    }
    return rc;
}

int queue_delay(redis_conn_t *r, const char *id, int64_t due_ms, char *err, size_t errlen)
{
    char score[32];
    const char *argv[4] = {"ZADD", QUEUE_DELAYED, score, id};

    if (check_job_id(id, err, errlen) != 0) {
        return -1;
    }
    snprintf(score, sizeof(score), "%lld", (long long)due_ms);
    return run_argv(r, 4, argv, err, errlen);
}

int queue_promote_due(redis_conn_t *r, int64_t now_ms, int limit, int *moved, char *err,
                      size_t errlen)
{
    char now[32];
    char count[16];
    const char *args[2] = {now, count};
    long long result = 0;

    if (moved != NULL) {
        *moved = 0;
    }
    if (limit < 1) {
        errbuf_set(err, errlen, "queue: promote limit must be at least 1");
        return -1;
    }
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    snprintf(count, sizeof(count), "%d", limit);
    if (run_script(r, PROMOTE_SCRIPT, 0, NULL, 2, args, &result, err, errlen) != 0) {
        return -1;
    }
    if (moved != NULL) {
        *moved = (int)result;
    }
    return 0;
}

static long integer_of(redis_conn_t *r, const char *command, const char *key)
{
    const char *argv[2] = {command, key};
    char err[256];
    redisReply *reply = redis_command_argv(r, 2, argv, NULL, err, sizeof(err));
    long value = -1;

    if (reply == NULL) {
        log_warn("queue: %s %s: %s", command, key, err);
        return -1;
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
        value = (long)reply->integer;
    }
    freeReplyObject(reply);
    return value;
}

long queue_depth(redis_conn_t *r)
{
    char err[256];
    long long total = 0;

    if (run_script(r, DEPTH_SCRIPT, 0, NULL, 0, NULL, &total, err, sizeof(err)) != 0) {
        log_warn("queue: depth: %s", err);
        return -1;
    }
    return (long)total;
}

long queue_delayed_count(redis_conn_t *r)
{
    return integer_of(r, "ZCARD", QUEUE_DELAYED);
}
