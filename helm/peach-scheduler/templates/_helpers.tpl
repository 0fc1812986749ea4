{{/*
Expand the name of the chart.
*/}}
{{- define "peach-scheduler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 characters (the DNS name limit).
When the release name already contains the chart name it is used as is.
*/}}
{{- define "peach-scheduler.fullname" -}}
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
Chart name and version as used by the helm.sh/chart label.
*/}}
{{- define "peach-scheduler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels of every object.
*/}}
{{- define "peach-scheduler.labels" -}}
helm.sh/chart: {{ include "peach-scheduler.chart" . }}
{{ include "peach-scheduler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: peach-scheduler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: never change between upgrades (a Deployment's selector is immutable).
*/}}
{{- define "peach-scheduler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "peach-scheduler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pod runs as.
*/}}
{{- define "peach-scheduler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "peach-scheduler.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image reference.
*/}}
{{- define "peach-scheduler.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The PersistentVolumeClaim holding the workspace (checkouts, environments, run logs, SQLite state).
*/}}
{{- define "peach-scheduler.claimName" -}}
{{- .Values.persistence.existingClaim | default (include "peach-scheduler.fullname" .) }}
{{- end }}

{{/*
The operator configuration file (SPEC §3) rendered from values. The chart owns workspace, state_url,
http (they must agree with the mounts, the Service and the Secrets below) and loops.drain (it must agree
with terminationGracePeriodSeconds); everything else comes from .Values.config as written. Without an external database the state is SQLite in the workspace volume;
with one, PEACH_STATE_URL (from a Secret) overrides state_url and no URL is written here.
*/}}
{{- define "peach-scheduler.config" -}}
{{ include "peach-scheduler.restartConfig" . }}
{{- $config := omit .Values.config "workspace" "state_url" "http" "loops" }}
{{- $loops := merge (dict "drain" (printf "%ds" (int .Values.gracefulStop.drainSeconds))) (.Values.config.loops | default dict) }}
{{- $_ := set $config "loops" $loops }}
{{ toYaml $config }}
{{- end }}

{{/*
The part of the configuration the chart sets that a running scheduler cannot change (SPEC §7): its
checksum rolls the pod. Everything else in the ConfigMap is reloaded live when the mounted file changes.
*/}}
{{- define "peach-scheduler.restartConfig" -}}
workspace: {{ .Values.persistence.mountPath | quote }}
{{- if not .Values.externalDatabase.existingSecret }}
state_url: {{ printf "sqlite:///%s/state.db" .Values.persistence.mountPath | quote }}
{{- end }}
http:
  host: 0.0.0.0
  port: {{ .Values.service.targetPort }}
  api_token_env: {{ .Values.apiToken.envName }}
{{- end }}

{{/*
Fail rendering when the configuration refers to a credential variable no Secret provides: the pod
would start and every sync of that repository would fail.
*/}}
{{- define "peach-scheduler.checkCredentials" -}}
{{- $provided := list }}
{{- range .Values.gitCredentials }}
{{- $provided = append $provided .envName }}
{{- end }}
{{- range $env := .Values.extraEnv }}
{{- $provided = append $provided $env.name }}
{{- end }}
{{- range $codops, $org := .Values.config.organisations }}
{{- range $repo := ($org.repositories | default list) }}
{{- range $key := list "token_env" "password_env" }}
{{- $name := index $repo $key }}
{{- if and $name (not (has $name $provided)) }}
{{- fail (printf "config.organisations.%s: repository %s refers to %s=%s, but no gitCredentials (or extraEnv) entry provides that variable" $codops $repo.url $key $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
