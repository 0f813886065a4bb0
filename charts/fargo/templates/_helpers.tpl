{{/*
Object names are fixed, not derived from the release name: the binary's defaults name them
(Lease `fargo-controller`, Services `fargo-webhook` and `fargo-activator`, Secret
`fargo-webhook-tls`, webhook configurations `fargo`), and there is one fargo per cluster.
*/}}

{{- define "fargo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "fargo.labels" -}}
helm.sh/chart: {{ include "fargo.chart" . }}
app.kubernetes.io/name: fargo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fargo
{{- end }}

{{/*
Selector labels of one component; call with (dict "root" $ "component" "controller").
The activator's two standard labels are what the profile NetworkPolicies admit traffic from
(ACTIVATOR_POD_LABELS in src/api/mod.rs): app.kubernetes.io/name=fargo and
app.kubernetes.io/component=activator.
*/}}
{{- define "fargo.selectorLabels" -}}
app.kubernetes.io/name: fargo
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects. */}}
{{- define "fargo.componentLabels" -}}
{{ include "fargo.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Pod labels of one component: the user's podLabels never override the selector labels. */}}
{{- define "fargo.podLabels" -}}
{{- $own := include "fargo.componentLabels" . | fromYaml }}
{{- $user := (index .root.Values .component).podLabels | default dict }}
{{- merge $own $user | toYaml }}
{{- end }}

{{- define "fargo.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{/* The activator's base URL, as the controller writes it into function URLs. */}}
{{- define "fargo.activatorUrl" -}}
{{- $port := int .Values.activator.service.port }}
{{- if eq $port 80 }}
{{- printf "http://fargo-activator.%s.svc" .Release.Namespace }}
{{- else }}
{{- printf "http://fargo-activator.%s.svc:%d" .Release.Namespace $port }}
{{- end }}
{{- end }}

{{/*
Whether the chart runs NATS itself: nats.enabled, and no existing server named by nats.url.
Empty when not, so that it reads as false in an `if`.
*/}}
{{- define "fargo.natsDeployed" -}}
{{- if and .Values.nats.enabled (not .Values.nats.url) }}true{{ end }}
{{- end }}

{{/*
The activator's --nats-url: nats.url, else the chart's own NATS, else none (asynchronous
invocations then answer 503). The chart's NATS is reached at its Service's ClusterIP, from the
variables Kubernetes gives every pod of the namespace created after the Service (the kubelet
expands $(VAR) in args), not at fargo-nats.<namespace>.svc: that needs a cluster DNS, which the
local cluster (tests/cluster) does not have. Helm creates Services before Deployments.
*/}}
{{- define "fargo.natsUrl" -}}
{{- if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else if .Values.nats.enabled }}
{{- print "nats://$(FARGO_NATS_SERVICE_HOST):$(FARGO_NATS_SERVICE_PORT_CLIENT)" }}
{{- end }}
{{- end }}

{{/*
The hardened container securityContext of every component (the images' user is 65532; fargo
writes no file, NATS only into its store volume).
*/}}
{{- define "fargo.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "fargo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Scheduling of one component: the user's affinity, or a soft anti-affinity that keeps replicas
on different nodes when it can; a soft spread over zones; nodeSelector and tolerations as given.
*/}}
{{- define "fargo.scheduling" -}}
{{- $values := index .root.Values .component }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
{{- if $values.affinity }}
  {{- toYaml $values.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "fargo.selectorLabels" . | nindent 14 }}
{{- end }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "fargo.selectorLabels" . | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}

{{/*
A map of labels as comma-separated key=value pairs, sorted by key.
*/}}
{{- define "fargo.labelPairs" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
