{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "flashsale-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else the release name
with the chart name appended unless it already contains it. At most 63
characters (a DNS label).
*/}}
{{- define "flashsale-operator.fullname" -}}
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
Name of the Service in front of the operator's /metrics.
*/}}
{{- define "flashsale-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "flashsale-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "flashsale-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the chart.
*/}}
{{- define "flashsale-operator.labels" -}}
helm.sh/chart: {{ include "flashsale-operator.chart" . }}
{{ include "flashsale-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashsale
{{- end }}

{{/*
Labels that select the operator's pods. They never change after install: a
Deployment's selector is immutable.
*/}}
{{- define "flashsale-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashsale-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "flashsale-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flashsale-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's image reference. The operator passes it on to the data-plane
pods (FLASHSALE_IMAGE), so every sale runs the very image of its operator.
*/}}
{{- define "flashsale-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
A manifest under files/, parsed, failing the render with the file's name when
it is missing or is not YAML: .Files.Get returns "" for a missing file and
fromYaml hides its parse errors in an "Error" key.
*/}}
{{- define "flashsale-operator.fileYaml" -}}
{{- $content := .root.Files.Get .path }}
{{- if not $content }}
{{- fail (printf "%s is missing from the chart: run make chart-sync" .path) }}
{{- end }}
{{- $doc := fromYaml $content }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "%s is not valid YAML: %s" .path (get $doc "Error")) }}
{{- end }}
{{- toYaml $doc }}
{{- end }}

{{/*
Labels of the crds.upgradeJob hook's objects: not the operator's selector
labels, so that no Service or policy of the operator selects its Pod.
*/}}
{{- define "flashsale-operator.crdUpgradeLabels" -}}
helm.sh/chart: {{ include "flashsale-operator.chart" . }}
app.kubernetes.io/name: {{ include "flashsale-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: crd-upgrade
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
