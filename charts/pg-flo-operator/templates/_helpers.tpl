{{/*
Chart name, or nameOverride.
*/}}
{{- define "pg-flo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else the release name when it already
contains the chart name, else <release>-<chart>. Truncated to 63 characters (DNS label).
*/}}
{{- define "pg-flo-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "pg-flo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "pg-flo-operator.labels" -}}
helm.sh/chart: {{ include "pg-flo-operator.chart" . }}
{{ include "pg-flo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the operator pods (must not change between upgrades).
*/}}
{{- define "pg-flo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pg-flo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "pg-flo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pg-flo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: <repository>@<digest> when image.digest is set, else
<repository>:<tag or appVersion>. The runtime pods use the same string.
*/}}
{{- define "pg-flo-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the leader-election Lease.
*/}}
{{- define "pg-flo-operator.leaseName" -}}
{{- default (include "pg-flo-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
RBAC rules for the watched resources: the same list for the ClusterRole (all namespaces) and
for the Role in each watched namespace. Exactly the operator's table
operator/src/rbac.rs (WATCHED_NAMESPACES), which says which call needs which verb; the chart
test compares the two. Objects the operator makes are server-side applied: create + patch,
never update. Keep README.md and docs/operator.md in sync.
*/}}
{{- define "pg-flo-operator.rules" -}}
# Custom resources: watched; only the groups' finalizer (a patch) and the /status of all three
# are written.
- apiGroups: ["pgflo.io"]
  resources: ["replicationgroups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["pgflo.io"]
  resources: ["rules", "routes"]
  verbs: ["list", "watch"]
- apiGroups: ["pgflo.io"]
  resources: ["replicationgroups/status", "rules/status", "routes/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion on the group's objects.
- apiGroups: ["pgflo.io"]
  resources: ["replicationgroups/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Secrets: the ones groups reference are read by name (get); list and watch serve a
# metadata-only watch (names and versions, never the data) that follows their changes; create
# and patch apply a managed NATS's generated credentials Secret <group>-nats-auth. Never
# deleted (it goes with its group).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Grow a managed NATS's volumes when spec.nats.managed.storageSize grows.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
# Pods are only listed and watched: their states (restarts, waiting reasons, termination
# messages) go into the ReplicationGroup status; a delete waits for them to be gone.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Deployments of earlier versions are only found and deleted (replaced by StatefulSets).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The copy Job of a ReplicationGroup with mode: copy.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The PodDisruptionBudget and NetworkPolicy of a managed NATS.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}

{{/*
namespaceSelector of the PodMonitors: the watched namespaces, or all of them.
*/}}
{{- define "pg-flo-operator.monitorNamespaceSelector" -}}
{{- if .Values.watchNamespaces -}}
matchNames:
  {{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- else -}}
any: true
{{- end -}}
{{- end }}

{{/*
Relabelings of the PodMonitors: the group and component of the pod become the series' `group`
and `component` labels (the rules and the dashboard select and aggregate by them).
*/}}
{{- define "pg-flo-operator.podRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_pgflo_io_group]
  targetLabel: group
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
  targetLabel: component
{{- end }}
