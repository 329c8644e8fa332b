{{/* Names, labels and the pieces every Deployment shares. */}}

{{- define "goblin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release whose shared objects (ConfigMap, Secrets, Services, policies) the pods use: this one,
     or for a canary (canary.enabled) the stable release it runs beside. */}}
{{- define "goblin.releaseName" -}}
{{- if .Values.canary.enabled -}}
{{- if eq .Values.canary.stableRelease .Release.Name -}}
{{- fail "canary.enabled: install the canary as a release of its own, beside canary.stableRelease" -}}
{{- end -}}
{{- .Values.canary.stableRelease -}}
{{- else -}}
{{- .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* The full name of the shared objects: the stable release's for a canary. */}}
{{- define "goblin.fullname" -}}
{{- $release := include "goblin.releaseName" . -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name $release -}}
{{- $release | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $release $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The prefix of the objects this release owns (Deployments, hooks, test pods): the full name, with
     "-canary" for a canary, so a canary never collides with the stable release even under fullnameOverride. */}}
{{- define "goblin.ownName" -}}
{{- include "goblin.fullname" . -}}{{- if .Values.canary.enabled }}-canary{{ end -}}
{{- end -}}

{{/* Pod label telling the stable pods from a canary's; Deployments select on it, Services do not. */}}
{{- define "goblin.track" -}}
goblin.dev/track: {{ ternary "canary" "stable" .Values.canary.enabled }}
{{- end -}}

{{/* The services that take HPAs and PDBs: stateless, scaled by load. Inference is not one of them. */}}
{{- define "goblin.scaledServices" -}}gateway router rag auth executor{{- end -}}
{{- define "goblin.backendServices" -}}router inference rag auth executor{{- end -}}

{{/* gRPC callers of each backend service: NetworkPolicy ingress and egress are both built from this.
     The gateway reaches inference only for its readiness check (/health/ready asks every backend's
     grpc.health.v1 over the mTLS channel), but a NetworkPolicy cannot tell methods apart. */}}
{{- define "goblin.callers" -}}
router: [gateway]
auth: [gateway]
rag: [gateway, router]
executor: [gateway]
inference: [gateway, router, rag]
{{- end -}}

{{/* Which services use which store. */}}
{{- define "goblin.storeUsers" -}}
postgres: [gateway, router, rag, auth, executor]
redis: [gateway, router, auth]
chroma: [rag]
{{- end -}}

{{/* Every setting that is a secret: refused in .Values.config, mounted from the Secret instead. */}}
{{- define "goblin.secretEnvNames" -}}
DATABASE_URL REDIS_URL CHROMA_URL GOBLIN_AUTH_KEY_ENCRYPTION_KEY GOBLIN_ADMIN_PASSWORD GOBLIN_PRINCIPAL_SIGNING_KEY GOBLIN_PRINCIPAL_VERIFY_KEY GOBLIN_AUTH_DATABASE_URL GOBLIN_ROUTER_DATABASE_URL GOBLIN_RAG_DATABASE_URL GOBLIN_EXECUTOR_DATABASE_URL GOBLIN_GATEWAY_DATABASE_URL
{{- end -}}

{{- define "goblin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "goblin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "goblin.name" . }}
app.kubernetes.io/instance: {{ include "goblin.releaseName" . }}
{{- end -}}

{{- define "goblin.labels" -}}
helm.sh/chart: {{ include "goblin.chart" . }}
{{ include "goblin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: goblin
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "router") */}}
{{- define "goblin.componentLabels" -}}
{{ include "goblin.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "goblin.componentSelector" -}}
{{ include "goblin.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "goblin.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "goblin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "goblin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "goblin.secretName" -}}
{{- default (printf "%s-secrets" (include "goblin.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "goblin.principalSecret" -}}
{{- default (printf "%s-principal" (include "goblin.fullname" .)) .Values.principal.existingSecret -}}
{{- end -}}

{{- define "goblin.httpsSecret" -}}
{{- default (printf "%s-https" (include "goblin.fullname" .)) .Values.tls.httpsSecret -}}
{{- end -}}

{{/* (dict "ctx" $ "service" "router") */}}
{{- define "goblin.mtlsSecret" -}}
{{- $given := get .ctx.Values.tls.mtlsSecrets .service -}}
{{- default (printf "%s-mtls-%s" (include "goblin.fullname" .ctx) .service) $given -}}
{{- end -}}

{{- define "goblin.serviceHost" -}}
{{- printf "%s-%s" (include "goblin.fullname" .ctx) .service -}}
{{- end -}}

{{- define "goblin.probePort" -}}
{{- add (get .ctx.Values.ports.grpc .service) 1000 -}}
{{- end -}}

{{- define "goblin.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "goblin.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end -}}

{{/* A file-mounted secret setting: NAME_FILE pointing into the goblin Secret's volume. */}}
{{- define "goblin.secretFileEnv" -}}
- name: {{ .name }}_FILE
  value: /run/secrets/goblin/{{ .key | default .name }}
{{- end -}}

{{/* The goblin Secret's keys a service reads as files: (dict "ctx" $ "service" "auth") */}}
{{- define "goblin.secretKeysFor" -}}
{{- $stores := include "goblin.storeUsers" .ctx | fromYaml -}}
{{- $keys := list -}}
{{- if has .service $stores.postgres }}{{ $keys = append $keys "DATABASE_URL" }}{{ end -}}
{{- if has .service $stores.redis }}{{ $keys = append $keys "REDIS_URL" }}{{ end -}}
{{- if has .service $stores.chroma }}{{ $keys = append $keys "CHROMA_URL" }}{{ end -}}
{{- if eq .service "auth" }}{{ $keys = append $keys "GOBLIN_AUTH_KEY_ENCRYPTION_KEY" }}{{ end -}}
{{- join " " $keys -}}
{{- end -}}
