-- Argo CD health of pg_flo's custom resources (pgflo.io ReplicationGroup, Rule, Route), from
-- the conditions the operator writes (docs/operations.md, "GitOps health"). Lua 5.1 (Argo CD).
local hs = { status = "Progressing", message = "waiting for the operator" }
if obj.status == nil then
  return hs
end

local function condition(type)
  if obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type then
        return c
      end
    end
  end
  return nil
end

local function is_true(type)
  local c = condition(type)
  return c ~= nil and c.status == "True"
end

local function set(status, c, fallback)
  hs.status = status
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    hs.message = c.message
  else
    hs.message = fallback
  end
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

if is_true("Stalled") then
  return set("Degraded", condition("Stalled"), "stalled")
end

if obj.kind == "ReplicationGroup" then
  local phase = obj.status.phase
  if phase == "Paused" or phase == "Stopped" then
    return set("Suspended", condition("Ready"), phase)
  end
  if phase == "Degraded" then
    return set("Degraded", condition("Degraded"), "degraded")
  end
  if is_true("Reconciling") then
    return set("Progressing", condition("Reconciling"), "reconciling")
  end
  if is_true("Ready") then
    return set("Healthy", condition("Ready"), phase)
  end
  if is_true("Degraded") then
    return set("Degraded", condition("Degraded"), "degraded")
  end
  return set("Progressing", condition("Ready"), "waiting for the group to be ready")
end

-- Rule, Route
local ready = condition("Ready")
if ready ~= nil then
  if ready.status == "True" then
    return set("Healthy", ready, "applied")
  end
  if ready.reason == "Suspended" then
    return set("Suspended", ready, "its group is paused or stopped")
  end
  return set("Progressing", condition("Reconciling") or ready, "waiting for the worker")
end
-- An operator before the Ready condition: Accepted only.
local accepted = condition("Accepted")
if accepted == nil or accepted.status == "Unknown" or accepted.reason == "Pending" then
  return set("Progressing", accepted, "waiting for the worker")
end
if accepted.status == "True" then
  return set("Healthy", accepted, "applied")
end
return set("Degraded", accepted, "not accepted")
