package k8s

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	grpcserver "github.com/dvrhotline/hotline/server/grpc"
)

// cnpgCluster is the part of CloudNativePG's postgresql.cnpg.io/v1 Cluster
// the manifest uses, with the field names and JSON tags of its Go API
// (github.com/cloudnative-pg/cloudnative-pg api/v1, release 1.25): the
// module is not served here, so strict decoding into this copy catches a
// misspelled or misplaced field, and the checks below its meaning. A field
// the manifest starts using must be added here from that API first.
type cnpgCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Instances             int    `json:"instances"`
		ImageName             string `json:"imageName"`
		PrimaryUpdateStrategy string `json:"primaryUpdateStrategy"`
		PostgresConfiguration struct {
			Synchronous *struct {
				Method         string `json:"method"`
				Number         int    `json:"number"`
				DataDurability string `json:"dataDurability"`
			} `json:"synchronous"`
			Parameters map[string]string `json:"parameters"`
		} `json:"postgresql"`
		Storage struct {
			Size string `json:"size"`
		} `json:"storage"`
		Bootstrap struct {
			InitDB *struct {
				Database               string   `json:"database"`
				Owner                  string   `json:"owner"`
				PostInitApplicationSQL []string `json:"postInitApplicationSQL"`
			} `json:"initdb"`
		} `json:"bootstrap"`
		Managed struct {
			Roles []struct {
				Name           string   `json:"name"`
				Ensure         string   `json:"ensure"`
				Login          bool     `json:"login"`
				Inherit        *bool    `json:"inherit"`
				InRoles        []string `json:"inRoles"`
				PasswordSecret *struct {
					Name string `json:"name"`
				} `json:"passwordSecret"`
			} `json:"roles"`
		} `json:"managed"`
		Resources corev1.ResourceRequirements `json:"resources"`
	} `json:"spec"`
}

// objects is the manifest decoded.
type objects struct {
	cluster     *cnpgCluster
	deployment  *appsv1.Deployment
	service     *corev1.Service
	pdb         *policyv1.PodDisruptionBudget
	netpols     []*networkingv1.NetworkPolicy
	unknownKind []string
}

// decode splits a multi-document manifest and decodes each document
// strictly (an unknown or duplicated field is an error) into its type.
func decode(b []byte) (*objects, error) {
	o := &objects{}
	for i, doc := range bytes.Split(b, []byte("\n---\n")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var dst any
		switch tm.APIVersion + "/" + tm.Kind {
		case "postgresql.cnpg.io/v1/Cluster":
			o.cluster = &cnpgCluster{}
			dst = o.cluster
		case "apps/v1/Deployment":
			o.deployment = &appsv1.Deployment{}
			dst = o.deployment
		case "v1/Service":
			o.service = &corev1.Service{}
			dst = o.service
		case "policy/v1/PodDisruptionBudget":
			o.pdb = &policyv1.PodDisruptionBudget{}
			dst = o.pdb
		case "networking.k8s.io/v1/NetworkPolicy":
			np := &networkingv1.NetworkPolicy{}
			o.netpols = append(o.netpols, np)
			dst = np
		default:
			o.unknownKind = append(o.unknownKind, tm.APIVersion+"/"+tm.Kind)
			continue
		}
		if err := yaml.UnmarshalStrict(doc, dst); err != nil {
			return nil, fmt.Errorf("document %d (%s %s): %w", i, tm.APIVersion, tm.Kind, err)
		}
	}
	return o, nil
}

func load(t *testing.T) *objects {
	t.Helper()
	b, err := os.ReadFile("hotline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.unknownKind) > 0 {
		t.Fatalf("objects of kinds this test does not check: %v", o.unknownKind)
	}
	if o.cluster == nil || o.deployment == nil || o.service == nil || o.pdb == nil || len(o.netpols) == 0 {
		t.Fatalf("the manifest needs a Cluster, a Deployment, a Service, a PodDisruptionBudget and NetworkPolicies")
	}
	return o
}

// TestManifestRefusesMisspelledFields: the strict decoding this test rests
// on does fail on a field the schema does not have, for core objects and
// for the Cluster copy.
func TestManifestRefusesMisspelledFields(t *testing.T) {
	b, _ := os.ReadFile("hotline.yaml")
	for _, bad := range []struct{ from, to string }{
		{"  replicas: 3\n", "  replica: 3\n"},
		{"minAvailable: 2", "minAvailible: 2"},
		{"      dataDurability: required", "      dataDurabilty: required"},
		{"readinessProbe: { grpc: { port: 8081 }", "readinessProbe: { grcp: { port: 8081 }"},
	} {
		if !bytes.Contains(b, []byte(bad.from)) {
			t.Fatalf("the manifest no longer has %q", bad.from)
		}
		if _, err := decode(bytes.Replace(b, []byte(bad.from), []byte(bad.to), 1)); err == nil {
			t.Errorf("%q decoded without an error", bad.to)
		}
	}
}

// TestManifestDatabaseIsSynchronousCloudNativePG: three instances, a
// synchronous standby required for every commit, the roles the server
// and its migrations need.
func TestManifestDatabaseIsSynchronousCloudNativePG(t *testing.T) {
	c := load(t).cluster
	s := c.Spec
	if s.Instances < 3 {
		t.Errorf("instances = %d, want at least 3", s.Instances)
	}
	sy := s.PostgresConfiguration.Synchronous
	if sy == nil || !slices.Contains([]string{"any", "first"}, sy.Method) || sy.Number < 1 || sy.Number >= s.Instances {
		t.Errorf("synchronous = %+v: want method any or first, 1 <= number < instances", sy)
	} else if sy.DataDurability != "required" {
		t.Errorf("synchronous.dataDurability = %q: want required, so that no acknowledged commit is only on the primary", sy.DataDurability)
	}
	if _, err := resource.ParseQuantity(s.Storage.Size); err != nil {
		t.Errorf("storage.size %q: %v", s.Storage.Size, err)
	}
	if !slices.Contains([]string{"unsupervised", "supervised"}, s.PrimaryUpdateStrategy) {
		t.Errorf("primaryUpdateStrategy %q", s.PrimaryUpdateStrategy)
	}
	if s.Bootstrap.InitDB == nil || s.Bootstrap.InitDB.Database == "" || s.Bootstrap.InitDB.Owner == "" {
		t.Fatal("bootstrap.initdb needs a database and an owner")
	}
	sql := strings.Join(s.Bootstrap.InitDB.PostInitApplicationSQL, ";")
	if !strings.Contains(sql, "CREATE ROLE hotline_service NOLOGIN") || !strings.Contains(sql, "GRANT hotline_service TO "+s.Bootstrap.InitDB.Owner) {
		t.Errorf("postInitApplicationSQL %q must create hotline_service and make the owner a member", sql)
	}
	var app bool
	for _, r := range s.Managed.Roles {
		if r.Login && slices.Contains(r.InRoles, "hotline_service") && r.PasswordSecret != nil && r.Ensure == "present" {
			app = true
		}
	}
	if !app {
		t.Error("managed.roles needs the server's login role, a member of hotline_service with a password Secret")
	}
	checkResources(t, "Cluster", s.Resources)
}

func checkResources(t *testing.T, who string, r corev1.ResourceRequirements) {
	t.Helper()
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := r.Requests[name], r.Limits[name]
		if req.IsZero() || lim.IsZero() {
			t.Errorf("%s: %s needs a request and a limit", who, name)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s above its limit %s", who, name, req.String(), lim.String())
		}
	}
}

// env returns a container's environment variable by name.
func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// TestManifestServerReplicasProbesAndDatabase: at least two replicas with
// resources, probes that speak plaintext gRPC to the health-only port
// (never the TLS port), the database through the Cluster's -rw Service
// with target_session_attrs=read-write, the keyring from a Secret.
func TestManifestServerReplicasProbesAndDatabase(t *testing.T) {
	o := load(t)
	d := o.deployment
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Fatalf("replicas = %v, want at least 2", d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Fatalf("the Deployment's selector does not match its pods: %v", err)
	}
	pod := d.Spec.Template.Spec
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		checkResources(t, "container "+c.Name, c.Resources)
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s may escalate privileges", c.Name)
		}
	}
	var srv corev1.Container
	for _, c := range pod.Containers {
		if slices.Contains(c.Args, "serve") {
			srv = c
		}
	}
	if srv.Name == "" {
		t.Fatal("no container runs serve")
	}
	health, ok := env(srv, "HOTLINE_HEALTH_LISTEN")
	if !ok {
		t.Fatal("serve has no HOTLINE_HEALTH_LISTEN: the kubelet's grpc probe cannot speak TLS to the API port")
	}
	listen, _ := env(srv, "HOTLINE_LISTEN")
	port := func(addr string) int32 {
		var p int32
		fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &p)
		return p
	}
	healthPort, apiPort := port(health.Value), port(listen.Value)
	if healthPort == 0 || healthPort == apiPort {
		t.Fatalf("health port %d must be its own, not the API's %d", healthPort, apiPort)
	}
	if _, tls := env(srv, "HOTLINE_TLS_CERT"); !tls {
		t.Error("the API port must be TLS (HOTLINE_TLS_CERT)")
	}
	for name, p := range map[string]*corev1.Probe{"readiness": srv.ReadinessProbe, "liveness": srv.LivenessProbe, "startup": srv.StartupProbe} {
		if p == nil || p.GRPC == nil {
			t.Errorf("%s probe: want a grpc probe", name)
			continue
		}
		if p.GRPC.Port != healthPort {
			t.Errorf("%s probe on port %d, want the plaintext health port %d", name, p.GRPC.Port, healthPort)
		}
		svc := ""
		if p.GRPC.Service != nil {
			svc = *p.GRPC.Service
		}
		want := grpcserver.LivenessService // never fails for a database outage
		if name == "readiness" {
			want = "" // NOT_SERVING while the database is unreachable
		}
		if svc != want {
			t.Errorf("%s probe asks for service %q, want %q", name, svc, want)
		}
	}

	cluster := o.cluster.Name
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		dbURL, ok := env(c, "DATABASE_URL")
		if !ok {
			continue
		}
		// The CA file is mounted in the pod; here a CA of the test's own
		// stands in, so that pgx parses the URL as it would there.
		u, _ := url.Parse(dbURL.Value)
		q := u.Query()
		if q.Get("sslrootcert") != "/db-ca/ca.crt" || !mountsDBCA(c) {
			t.Errorf("container %s: sslrootcert must be the mounted hotline-db-ca Secret's /db-ca/ca.crt", c.Name)
		}
		q.Set("sslrootcert", testCA(t))
		u.RawQuery = q.Encode()
		cfg, err := pgxpool.ParseConfig(u.String())
		if err != nil {
			t.Errorf("container %s: DATABASE_URL: %v", c.Name, err)
			continue
		}
		if cfg.ConnConfig.Host != cluster+"-rw" {
			t.Errorf("container %s connects to %q, want the Cluster's %s-rw Service", c.Name, cfg.ConnConfig.Host, cluster)
		}
		if u.Query().Get("target_session_attrs") != "read-write" || u.Query().Get("sslmode") != "verify-full" {
			t.Errorf("container %s: DATABASE_URL needs target_session_attrs=read-write and sslmode=verify-full", c.Name)
		}
		if cfg.ConnConfig.Database != o.cluster.Spec.Bootstrap.InitDB.Database {
			t.Errorf("container %s: database %q, the Cluster makes %q", c.Name, cfg.ConnConfig.Database, o.cluster.Spec.Bootstrap.InitDB.Database)
		}
		pw, ok := env(c, "PGPASSWORD")
		if !ok || pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil {
			t.Errorf("container %s: the database password must come from a Secret (PGPASSWORD)", c.Name)
		}
	}

	var keyringSecret bool
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "hotline-keyring" {
			keyringSecret = true
		}
	}
	if !keyringSecret {
		t.Error("the keyring must come from the hotline-keyring Secret")
	}

	if !sel.Matches(labels.Set(o.service.Spec.Selector)) && !labels.SelectorFromSet(o.service.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Error("the Service selects no server pod")
	}
	for _, p := range o.service.Spec.Ports {
		if p.TargetPort.String() != "grpc" && p.TargetPort.IntVal != apiPort {
			t.Errorf("the Service targets %s, not the gRPC port", p.TargetPort.String())
		}
	}
}

// mountsDBCA reports whether c mounts a volume at /db-ca.
func mountsDBCA(c corev1.Container) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/db-ca" })
}

// testCA writes a self-signed CA certificate and returns its file.
func testCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestManifestDisruptionBudgetAndNetworkPolicy: a voluntary disruption
// leaves a replica serving; the server's traffic is limited to what it
// needs, and the database takes connections from the server.
func TestManifestDisruptionBudgetAndNetworkPolicy(t *testing.T) {
	o := load(t)
	podLabels := labels.Set(o.deployment.Spec.Template.Labels)
	pdbSel, err := metav1.LabelSelectorAsSelector(o.pdb.Spec.Selector)
	if err != nil || !pdbSel.Matches(podLabels) {
		t.Fatalf("the PodDisruptionBudget does not select the server pods: %v", err)
	}
	if o.pdb.Spec.MinAvailable == nil || o.pdb.Spec.MinAvailable.IntValue() < 1 || o.pdb.Spec.MinAvailable.IntValue() >= int(*o.deployment.Spec.Replicas) {
		t.Errorf("minAvailable %v: want at least 1 and fewer than the replicas (%d), or no drain could proceed", o.pdb.Spec.MinAvailable, *o.deployment.Spec.Replicas)
	}
	dbLabels := labels.Set{"cnpg.io/cluster": o.cluster.Name}
	var serverPolicy, dbPolicy bool
	for _, np := range o.netpols {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case sel.Matches(podLabels):
			serverPolicy = true
			if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				t.Errorf("NetworkPolicy %s leaves the server's egress open", np.Name)
			}
			var toDB bool
			for _, e := range np.Spec.Egress {
				for _, peer := range e.To {
					if peer.PodSelector != nil {
						s, _ := metav1.LabelSelectorAsSelector(peer.PodSelector)
						toDB = toDB || s.Matches(dbLabels) && slices.ContainsFunc(e.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port.IntValue() == 5432 })
					}
				}
			}
			if !toDB {
				t.Errorf("NetworkPolicy %s lets the server reach no database instance on 5432", np.Name)
			}
		case sel.Matches(dbLabels):
			dbPolicy = true
			var fromServer bool
			for _, in := range np.Spec.Ingress {
				for _, peer := range in.From {
					if peer.PodSelector != nil {
						s, _ := metav1.LabelSelectorAsSelector(peer.PodSelector)
						fromServer = fromServer || s.Matches(podLabels)
					}
				}
			}
			if !fromServer {
				t.Errorf("NetworkPolicy %s keeps the server out of the database", np.Name)
			}
		}
	}
	if !serverPolicy || !dbPolicy {
		t.Errorf("want NetworkPolicies for the server (found: %v) and the database (found: %v)", serverPolicy, dbPolicy)
	}
}
