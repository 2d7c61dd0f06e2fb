{{/* Names and labels shared by every template. */}}
{{- define "omnir1.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "omnir1.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "omnir1.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "omnir1.image" -}}
{{ printf "%s:%s" .repository .tag | quote }}
{{- end -}}

{{- /* In-cluster URLs of the services: reachable from any namespace the NetworkPolicies admit. */}}
{{- define "omnir1.mlflowUrl" -}}
{{- printf "http://%s-mlflow.%s.svc.%s:%v" (include "omnir1.fullname" .) .Release.Namespace .Values.clusterDomain .Values.mlflow.port -}}
{{- end -}}

{{- define "omnir1.system2Url" -}}
{{- printf "http://%s-system2.%s.svc.%s:%v" (include "omnir1.fullname" .) .Release.Namespace .Values.clusterDomain .Values.system2.port -}}
{{- end -}}

{{- /* Labels of a pod the NetworkPolicies let reach both System 2 and MLflow. */}}
{{- define "omnir1.clientLabels" -}}
{{- toYaml (merge (dict) .Values.networkPolicy.system2Clients .Values.networkPolicy.mlflowClients) -}}
{{- end -}}

{{- /* Whether the chart writes the Secret of MLFLOW_TRACKING_URI (else it is a prerequisite). */}}
{{- define "omnir1.writesTrackingSecret" -}}
{{- if and .Values.mlflow.enabled .Values.secrets.createMlflowTracking }}true{{ end -}}
{{- end -}}

{{- /* Whether an object read by `lookup` is this release's (Helm's ownership annotations): Helm
adopts it on install or upgrade, anything else it refuses. */}}
{{- define "omnir1.ownedByRelease" -}}
{{- $a := .object.metadata.annotations | default dict }}
{{- if and (eq (get $a "meta.helm.sh/release-name") .root.Release.Name) (eq (get $a "meta.helm.sh/release-namespace") .root.Release.Namespace) }}true{{ end -}}
{{- end -}}
