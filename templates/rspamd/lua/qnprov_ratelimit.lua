--[[
qnprov: the keys and buckets of the outbound limits (issue 13), for rspamd's own
ratelimit module (its `custom_keywords` option). Installed by the qnprov rspamd
role; the data (limits, user -> agency, internal domains, reply texts) comes from
the `qnprov` block the role renders into local.d/ratelimit.conf.

This file keeps no state and limits no rate: each function only names the Redis
bucket of a message (per account, per agency) and its size; rspamd's ratelimit
module checks and updates the leaky buckets in Redis and answers "soft reject"
(451 4.7.1 through the milter) when one is full. A function that returns nil
leaves the message out of that bucket (no authenticated user, no external
recipient, no agency).

The one thing it decides itself is the limit on the recipients of ONE message
(rspamd's ratelimit has buckets over time only): the prefilter at the end counts
the message's SMTP recipients (all, and external ones) against the account's
user_recipients_per_message / user_external_recipients_per_message, and over
either it sets rspamd's own soft reject with the limit's text and adds the
module's info symbol, so the refusal is logged and audited like a full bucket.
]]--

local opts = rspamd_config:get_all_opt('ratelimit') or {}
local data = opts.qnprov or {}
local limits = data.limits or {}
local agency_limits = data.agency_limits or {}
local user_limits = data.user_limits or {}
local users = data.user_agency or {}
local domains = data.domain_agency or {}
local internal = {}
for _, d in ipairs(data.internal_domains or {}) do internal[string.lower(d)] = true end
local texts = data.messages or {}
local info_symbol = opts.info_symbol

local function user_of(task)
  local u = task:get_user()
  if not u or u == '' then return nil end
  return string.lower(u)
end

local function agency_of(user)
  if users[user] then return users[user] end
  local domain = string.match(user, '@([^@]+)$')
  if domain and domains[domain] then return domains[domain] end
  return nil
end

-- The limit NAME for this account: its own override, else its agency's, else the default.
local function limit(user, agency, name)
  local u = user_limits[user]
  if u and u[name] then return tonumber(u[name]) end
  local a = agency and agency_limits[agency]
  if a and a[name] then return tonumber(a[name]) end
  return tonumber(limits[name])
end

local function external_count(task)
  local rcpts = task:get_recipients('smtp') or {}
  local n = 0
  for _, r in ipairs(rcpts) do
    local domain = string.lower(r.domain or '')
    if not internal[domain] then n = n + 1 end
  end
  return n
end

local function text(name, number, agency)
  local t = texts[name] or 'Sending limit reached, try again later'
  t = string.gsub(t, '%%N', tostring(number))
  t = string.gsub(t, '%%A', agency or '-')
  return t
end

-- A bucket that holds `n` in `period` seconds: rspamd leaks it at n/period per second.
local function bucket(n, period, extra)
  if not n or n <= 0 then return nil end
  local b = {burst = n, rate = n / period}
  for k, v in pairs(extra or {}) do b[k] = v end
  return b
end

local HOUR = 3600

local function user_bucket(key, name, only_external, count_messages)
  return function(task)
    local user = user_of(task)
    if not user then return nil end
    if only_external and external_count(task) == 0 then return nil end
    local n = limit(user, agency_of(user), name)
    local b = bucket(n, HOUR, {skip_recipients = count_messages, message = text(name, n)})
    if not b then return nil end
    return 'qnprov:' .. key .. ':' .. user, b
  end
end

local function agency_bucket(key, name, only_external, count_messages)
  return function(task)
    local user = user_of(task)
    if not user then return nil end
    local agency = agency_of(user)
    if not agency then return nil end
    if only_external and external_count(task) == 0 then return nil end
    local a = agency_limits[agency]
    local n = tonumber(a and a[name] or limits[name])
    local b = bucket(n, HOUR, {skip_recipients = count_messages, message = text(name, n, agency)})
    if not b then return nil end
    return 'qnprov:' .. key .. ':' .. agency, b
  end
end

-- Recipients per message: over a limit, the whole message gets rspamd's soft reject
-- (the milter's 451 4.7.1 at the end of DATA) with that limit's text, and the info
-- symbol names the limit (the metadata exporter's journal event). A message over both
-- limits is named once, by the first (all recipients, then external ones): one refused
-- message is one refusal in the audit trail and the report.
local function recipients_per_message(task)
  local user = user_of(task)
  if not user then return end
  local agency = agency_of(user)
  local counts = {
    {'user_recipients_per_message', #(task:get_recipients('smtp') or {})},
    {'user_external_recipients_per_message', external_count(task)},
  }
  for _, c in ipairs(counts) do
    local name, count = c[1], c[2]
    local n = limit(user, agency, name)
    if n and n > 0 and count > n then
      if info_symbol then
        task:insert_result(info_symbol, 1.0, string.format('qnprov_%s(%d>%d)', name, count, n))
      end
      task:set_pre_result('soft reject', text(name, n), 'ratelimit')
      return
    end
  end
end

rspamd_config:register_symbol({
  name = 'QNPROV_RECIPIENTS_PER_MESSAGE',
  type = 'prefilter',
  callback = recipients_per_message,
  -- high (9): before rspamd's ratelimit prefilter (medium, 5), which does nothing once a
  -- pre-result is set, so a refused message fills no hourly bucket
  priority = require('lua_util').symbols_priorities.high,
  flags = 'empty,nostat',
})

return {
  -- messages per hour (a message counts once, whatever its recipients)
  qnprov_user_messages = user_bucket('um', 'user_messages_per_hour', false, true),
  -- recipients per hour, internal and external together
  qnprov_user_recipients = user_bucket('ur', 'user_recipients_per_hour', false, false),
  -- recipients per hour of the messages that have an external recipient (stricter)
  qnprov_user_external = user_bucket('ue', 'user_external_recipients_per_hour', true, false),
  qnprov_agency_messages = agency_bucket('am', 'agency_messages_per_hour', false, true),
  qnprov_agency_external = agency_bucket('ae', 'agency_external_recipients_per_hour', true, false),
  -- the burst detector: never refuses (skip_soft_reject); when full, rspamd's
  -- ratelimit adds its info symbol with "qnprov_burst(...)" and the metadata
  -- exporter raises the alert.
  qnprov_burst = function(task)
    local user = user_of(task)
    if not user or external_count(task) == 0 then return nil end
    local n = limit(user, agency_of(user), 'burst_external_recipients')
    local period = limit(user, agency_of(user), 'burst_window_seconds') or 600
    local b = bucket(n, period, {skip_soft_reject = true})
    if not b then return nil end
    return 'qnprov:burst:' .. user, b
  end,
}
