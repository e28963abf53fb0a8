// Copyright 2026 metrics-aggregation authors.
//
// pulumi-resource-tls: a small, project-written stand-in for the `tls` Pulumi provider, used by
// the local toolchain only.
//
// Why it exists: the upstream provider (github.com/pulumi/pulumi-tls/provider/v5, a bridged
// Terraform provider) and the Terraform provider it wraps are not served by the Go module proxy
// this project is limited to, so it cannot be built (see toolchain/versions.env). The project's
// program uses four resources of the `pulumi_tls` Python SDK 5.6.2; this binary implements them
// with the Go standard library, on the same wire names, so that `pulumi preview/up/destroy` work
// offline against the local sandbox:
//
//	tls:index/privateKey:PrivateKey               RSA / ECDSA (P224, P256, P384, P521) / ED25519
//	tls:index/certRequest:CertRequest             PKCS#10 CSR
//	tls:index/selfSignedCert:SelfSignedCert       X.509 v3, self-signed
//	tls:index/locallySignedCert:LocallySignedCert X.509 v3, signed by a CA key + cert
//
// Semantics follow terraform-provider-tls (internal/provider/common_cert.go and resource_*.go), which
// pulumi-tls bridges: every input change replaces the resource except a certificate's
// earlyRenewalHours, an in-place update of the state only (no new certificate); a certificate is
// replaced once `readyForRenewal` (now >= end - earlyRenewalHours, the planned earlyRenewalHours, at
// Diff as the bridge runs ModifyPlan there); validityStartTime/validityEndTime are time.Now()-based
// MarshalText values (RFC 3339 with nanoseconds, trailing zeros dropped, in the provider's local zone);
// private-key outputs are secrets. Not implemented: the write-only inputs (*Wo), the functions
// getPublicKey / getCertificate, the provider's `proxy` config, and `import`.
// It is NOT the upstream provider: use it for the local sandbox and tests, not for production keys.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // subject key id (RFC 5280 method 1), as upstream
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"metrics-aggregation/toolchain/adapters/internal/provider"
	"metrics-aggregation/toolchain/adapters/internal/serve"
)

const (
	tPrivateKey        = "tls:index/privateKey:PrivateKey"
	tCertRequest       = "tls:index/certRequest:CertRequest"
	tSelfSignedCert    = "tls:index/selfSignedCert:SelfSignedCert"
	tLocallySignedCert = "tls:index/locallySignedCert:LocallySignedCert"
)

func main() {
	prov := &tlsProvider{provider.Base{
		Name: "tls",
		// Private keys, as the pulumi_tls schema marks them.
		Secrets: map[string]bool{
			"privateKeyPem": true, "privateKeyPemPkcs8": true, "privateKeyOpenssh": true, "caPrivateKeyPem": true,
		},
	}}
	serve.Main("pulumi-resource-tls", func(srv grpc.ServiceRegistrar) {
		pulumirpc.RegisterResourceProviderServer(srv, prov)
	})
}

type tlsProvider struct {
	provider.Base
}

// ---------------------------------------------------------------- CRUD

func defaults(t string) resource.PropertyMap {
	switch t {
	case tPrivateKey:
		return resource.PropertyMap{
			"ecdsaCurve": resource.NewStringProperty("P224"),
			"rsaBits":    resource.NewNumberProperty(2048),
		}
	case tSelfSignedCert:
		return resource.PropertyMap{
			"earlyRenewalHours": resource.NewNumberProperty(0), "isCaCertificate": resource.NewBoolProperty(false),
			"maxPathLength": resource.NewNumberProperty(0), "setAuthorityKeyId": resource.NewBoolProperty(false),
			"setSubjectKeyId": resource.NewBoolProperty(false),
		}
	case tLocallySignedCert:
		return resource.PropertyMap{
			"earlyRenewalHours": resource.NewNumberProperty(0), "isCaCertificate": resource.NewBoolProperty(false),
			"maxPathLength": resource.NewNumberProperty(0), "setSubjectKeyId": resource.NewBoolProperty(false),
		}
	}
	return resource.PropertyMap{}
}

func (p *tlsProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	t := provider.ResourceType(req.GetUrn())
	news, err := provider.UnmarshalInputs(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	fail := func(prop, format string, args ...any) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: prop, Reason: fmt.Sprintf(format, args...)})
	}
	for k, v := range defaults(t) {
		if _, ok := news[k]; !ok {
			news[k] = v
		}
	}
	str := func(k string) (string, bool) {
		v, ok := news[resource.PropertyKey(k)]
		if !ok || v.ContainsUnknowns() {
			return "", false
		}
		if v.IsSecret() {
			v = v.SecretValue().Element
		}
		if !v.IsString() {
			return "", false
		}
		return v.StringValue(), true
	}
	required := map[string][]string{
		tPrivateKey:        {"algorithm"},
		tCertRequest:       {},
		tSelfSignedCert:    {"allowedUses", "validityPeriodHours"},
		tLocallySignedCert: {"allowedUses", "validityPeriodHours", "certRequestPem", "caCertPem"},
	}
	reqs, known := required[t]
	if !known {
		return nil, fmt.Errorf("tls: resource type %q is not supported by this provider", t)
	}
	for _, k := range reqs {
		if _, ok := news[resource.PropertyKey(k)]; !ok {
			fail(k, "missing required property '%s'", k)
		}
	}
	for _, wo := range []string{"privateKeyPemWo", "caPrivateKeyPemWo"} {
		if _, ok := news[resource.PropertyKey(wo)]; ok {
			fail(wo, "write-only inputs are not supported by this provider; use %s", strings.TrimSuffix(wo, "Wo"))
		}
	}
	switch t {
	case tPrivateKey:
		if a, ok := str("algorithm"); ok && a != "RSA" && a != "ECDSA" && a != "ED25519" {
			fail("algorithm", "algorithm must be one of RSA, ECDSA, ED25519 (got %q)", a)
		}
		if c, ok := str("ecdsaCurve"); ok && curve(c) == nil {
			fail("ecdsaCurve", "ecdsaCurve must be one of P224, P256, P384, P521 (got %q)", c)
		}
	case tCertRequest, tSelfSignedCert:
		if _, ok := news["privateKeyPem"]; !ok {
			fail("privateKeyPem", "missing required property 'privateKeyPem'")
		}
	case tLocallySignedCert:
		if _, ok := news["caPrivateKeyPem"]; !ok {
			fail("caPrivateKeyPem", "missing required property 'caPrivateKeyPem'")
		}
	}
	if v, ok := news["allowedUses"]; ok && v.IsArray() {
		for _, u := range v.ArrayValue() {
			if u.IsString() {
				if _, _, ok := usage(u.StringValue()); !ok {
					fail("allowedUses", "unknown allowed use %q", u.StringValue())
				}
			}
		}
	}
	inputs, err := plugin.MarshalProperties(news, plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true})
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: inputs, Failures: failures}, nil
}

// inputKeys lists the inputs of each type: a change to one of them replaces the resource, except
// the updateKeys.
var inputKeys = map[string][]string{
	tPrivateKey:  {"algorithm", "ecdsaCurve", "rsaBits"},
	tCertRequest: {"privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris"},
	tSelfSignedCert: {"privateKeyPem", "subject", "dnsNames", "ipAddresses", "uris", "allowedUses",
		"validityPeriodHours", "earlyRenewalHours", "isCaCertificate", "maxPathLength", "setAuthorityKeyId",
		"setSubjectKeyId"},
	tLocallySignedCert: {"certRequestPem", "caPrivateKeyPem", "caCertPem", "allowedUses", "validityPeriodHours",
		"earlyRenewalHours", "isCaCertificate", "maxPathLength", "setSubjectKeyId"},
}

// updateKeys are the inputs whose change is an in-place update: earlyRenewalHours is the only
// attribute of the certificate resources without a RequiresReplace plan modifier
// (terraform-provider-tls internal/provider/resource_self_signed_cert.go, resource_locally_signed_cert.go).
var updateKeys = map[string]bool{"earlyRenewalHours": true}

// Configure reports provider-side previews, as the bridge does (pulumi-terraform-bridge
// pkg/tfbridge/provider.go Configure: SupportsPreview true): a preview of an update
// then asks Update, which carries the state's certificate forward, instead of taking the new inputs
// for the outputs (which would make certPem unknown downstream of a mere earlyRenewalHours change).
func (p *tlsProvider) Configure(ctx context.Context, req *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	resp, err := p.Base.Configure(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.SupportsPreview = true
	return resp, nil
}

func (p *tlsProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	t := provider.ResourceType(req.GetUrn())
	olds, news, err := provider.OldsAndNews(req)
	if err != nil {
		return nil, err
	}
	ignored := map[string]bool{}
	for _, k := range req.GetIgnoreChanges() {
		ignored[k] = true
	}
	var diffs, replaces []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for _, k := range inputKeys[t] {
		if ignored[k] {
			continue
		}
		if provider.InputChanged(olds, news, k) {
			_, hasOld := olds[resource.PropertyKey(k)]
			_, hasNew := news[resource.PropertyKey(k)]
			diffs = append(diffs, k)
			replace := !updateKeys[k]
			if replace {
				replaces = append(replaces, k)
			}
			detailed[k] = &pulumirpc.PropertyDiff{Kind: diffKind(hasOld, hasNew, replace), InputDiff: true}
		}
	}
	if t == tSelfSignedCert || t == tLocallySignedCert {
		// ModifyPlan reads early_renewal_hours from the plan: the new value decides, the state's
		// only while the new one is not known yet.
		plan := resource.PropertyMap{"validityEndTime": olds["validityEndTime"], "earlyRenewalHours": olds["earlyRenewalHours"]}
		if v, ok := news["earlyRenewalHours"]; ok && v.IsNumber() {
			plan["earlyRenewalHours"] = v
		}
		ready, err := readyForRenewal(plan, time.Now())
		if err != nil {
			return nil, err
		}
		if ready {
			diffs = append(diffs, "readyForRenewal")
			replaces = append(replaces, "readyForRenewal")
			detailed["readyForRenewal"] = &pulumirpc.PropertyDiff{Kind: pulumirpc.PropertyDiff_UPDATE_REPLACE}
		}
	}
	return provider.DiffResult(diffs, replaces, detailed), nil
}

// diffKind: an input added, deleted or changed, replacing the resource or updating it in place.
func diffKind(hasOld, hasNew, replace bool) pulumirpc.PropertyDiff_Kind {
	switch {
	case !hasOld && replace:
		return pulumirpc.PropertyDiff_ADD_REPLACE
	case !hasOld:
		return pulumirpc.PropertyDiff_ADD
	case !hasNew && replace:
		return pulumirpc.PropertyDiff_DELETE_REPLACE
	case !hasNew:
		return pulumirpc.PropertyDiff_DELETE
	case replace:
		return pulumirpc.PropertyDiff_UPDATE_REPLACE
	}
	return pulumirpc.PropertyDiff_UPDATE
}

// readyForRenewal is terraform-provider-tls common_cert.go's test (modifyPlanIfCertificateReadyForRenewal,
// modifyStateIfCertificateReadyForRenewal): the early-renewal time, validity_end_time minus
// early_renewal_hours, is not after now. A validityEndTime that does not parse as RFC 3339 is an error,
// as upstream; a state without one (being created) is not ready.
func readyForRenewal(state resource.PropertyMap, now time.Time) (bool, error) {
	end, ok := state["validityEndTime"]
	if !ok || !end.IsString() {
		return false, nil
	}
	t, err := time.Parse(time.RFC3339, end.StringValue())
	if err != nil {
		return false, fmt.Errorf("tls: failed to parse data from string: %s: %w", end.StringValue(), err)
	}
	early := provider.Number(state, "earlyRenewalHours", 0)
	return t.Add(-time.Duration(early*float64(time.Hour))).Sub(now) <= 0, nil
}

func (p *tlsProvider) Create(_ context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	t := provider.ResourceType(req.GetUrn())
	return p.CreateFrom(req, func(in resource.PropertyMap) (string, resource.PropertyMap, error) {
		var id string
		var outs resource.PropertyMap
		var err error
		switch t {
		case tPrivateKey:
			id, outs, err = createPrivateKey(in)
		case tCertRequest:
			id, outs, err = createCertRequest(in)
		case tSelfSignedCert, tLocallySignedCert:
			id, outs, err = createCert(t, in)
		default:
			err = fmt.Errorf("resource type %q is not supported by this provider", t)
		}
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", t, err)
		}
		for k, v := range in {
			if _, ok := outs[k]; !ok {
				outs[k] = v
			}
		}
		return id, outs, nil
	})
}

// Read: nothing lives outside the state, so the state is the truth.
func (p *tlsProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if req.GetProperties() == nil || len(req.GetProperties().GetFields()) == 0 {
		return nil, errors.New("tls: import is not supported by this provider")
	}
	state, err := provider.Unmarshal(req.GetProperties(), false)
	if err != nil {
		return nil, err
	}
	t := provider.ResourceType(req.GetUrn())
	if t == tSelfSignedCert || t == tLocallySignedCert {
		ready, err := readyForRenewal(state, time.Now())
		if err != nil {
			return nil, err
		}
		state["readyForRenewal"] = resource.NewBoolProperty(ready)
	}
	props, err := p.Marshal(state)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: props, Inputs: req.GetInputs()}, nil
}

// Update is upstream's updatedUsingPlan (terraform-provider-tls internal/provider/common.go): the new
// state is the plan, the new inputs over the state's computed values (UseStateForUnknown), so the key,
// CSR and certificate stay as they are. Diff sends only an earlyRenewalHours change of a certificate
// here; a preview answers the same, as the values are all known.
func (p *tlsProvider) Update(_ context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	t := provider.ResourceType(req.GetUrn())
	if t != tSelfSignedCert && t != tLocallySignedCert {
		return nil, fmt.Errorf("tls: every change of a %s replaces it; Update is never expected", t)
	}
	olds, news, err := provider.OldsAndNews(req)
	if err != nil {
		return nil, err
	}
	outs := updatedUsingPlan(olds, news)
	props, err := p.Marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

// updatedUsingPlan: the state's outputs with the new inputs over them; readyForRenewal false, as a
// ready certificate is replaced, never updated.
func updatedUsingPlan(olds, news resource.PropertyMap) resource.PropertyMap {
	outs := olds.Copy()
	for k, v := range news {
		outs[k] = v
	}
	outs["readyForRenewal"] = resource.NewBoolProperty(false)
	return outs
}

func (p *tlsProvider) Delete(context.Context, *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// ---------------------------------------------------------------- keys

func curve(name string) elliptic.Curve {
	switch name {
	case "P224":
		return elliptic.P224()
	case "P256":
		return elliptic.P256()
	case "P384":
		return elliptic.P384()
	case "P521":
		return elliptic.P521()
	}
	return nil
}

func createPrivateKey(in resource.PropertyMap) (string, resource.PropertyMap, error) {
	var key crypto.Signer
	var keyPEM *pem.Block
	var err error
	switch alg := provider.String(in, "algorithm"); alg {
	case "RSA":
		bits := int(provider.Number(in, "rsaBits", 0))
		if bits < 1024 {
			return "", nil, fmt.Errorf("rsaBits must be >= 1024 (got %d)", bits)
		}
		var k *rsa.PrivateKey
		if k, err = rsa.GenerateKey(rand.Reader, bits); err == nil {
			key = k
			keyPEM = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		}
	case "ECDSA":
		c := curve(provider.String(in, "ecdsaCurve"))
		if c == nil {
			return "", nil, fmt.Errorf("unsupported ecdsaCurve %q", provider.String(in, "ecdsaCurve"))
		}
		var k *ecdsa.PrivateKey
		if k, err = ecdsa.GenerateKey(c, rand.Reader); err == nil {
			key = k
			var der []byte
			if der, err = x509.MarshalECPrivateKey(k); err == nil {
				keyPEM = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
			}
		}
	case "ED25519":
		var k ed25519.PrivateKey
		if _, k, err = ed25519.GenerateKey(rand.Reader); err == nil {
			key = k
		}
	default:
		return "", nil, fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return "", nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	pkcs8PEM := &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}
	if keyPEM == nil {
		keyPEM = pkcs8PEM
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", nil, err
	}
	outs := resource.PropertyMap{
		"privateKeyPem":              resource.NewStringProperty(string(pem.EncodeToMemory(keyPEM))),
		"privateKeyPemPkcs8":         resource.NewStringProperty(string(pem.EncodeToMemory(pkcs8PEM))),
		"publicKeyPem":               resource.NewStringProperty(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))),
		"privateKeyOpenssh":          resource.NewStringProperty(""),
		"publicKeyOpenssh":           resource.NewStringProperty(""),
		"publicKeyFingerprintMd5":    resource.NewStringProperty(""),
		"publicKeyFingerprintSha256": resource.NewStringProperty(""),
	}
	// OpenSSH encodings exist for RSA, ED25519 and the ECDSA curves P256/P384/P521 only.
	if sshPub, err := ssh.NewPublicKey(key.Public()); err == nil {
		outs["publicKeyOpenssh"] = resource.NewStringProperty(string(ssh.MarshalAuthorizedKey(sshPub)))
		outs["publicKeyFingerprintMd5"] = resource.NewStringProperty(ssh.FingerprintLegacyMD5(sshPub))
		outs["publicKeyFingerprintSha256"] = resource.NewStringProperty(ssh.FingerprintSHA256(sshPub))
		if blk, err := ssh.MarshalPrivateKey(key, ""); err == nil {
			outs["privateKeyOpenssh"] = resource.NewStringProperty(string(pem.EncodeToMemory(blk)))
		}
	}
	sum := sha1.Sum(pubDER) //nolint:gosec
	return hex.EncodeToString(sum[:]), outs, nil
}

func parsePrivateKey(pemText string) (crypto.Signer, string, error) {
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		return nil, "", errors.New("private key: no PEM block found")
	}
	var key any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "OPENSSH PRIVATE KEY":
		key, err = ssh.ParseRawPrivateKey([]byte(pemText))
		if k, ok := key.(*ed25519.PrivateKey); ok {
			key = *k
		}
	default:
		return nil, "", fmt.Errorf("private key: unsupported PEM type %q", blk.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("private key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, "RSA", nil
	case *ecdsa.PrivateKey:
		return k, "ECDSA", nil
	case ed25519.PrivateKey:
		return k, "ED25519", nil
	}
	return nil, "", fmt.Errorf("private key: unsupported key type %T", key)
}

func keyAlgorithm(pub any) string {
	switch pub.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PublicKey:
		return "ED25519"
	}
	return ""
}

// ---------------------------------------------------------------- subjects, SANs, usages

func subject(in resource.PropertyMap) pkix.Name {
	var n pkix.Name
	v, ok := in["subject"]
	if !ok || !v.IsObject() {
		return n
	}
	s := v.ObjectValue()
	one := func(k string) []string {
		if x := provider.String(s, k); x != "" {
			return []string{x}
		}
		return nil
	}
	n.CommonName = provider.String(s, "commonName")
	n.Organization = one("organization")
	n.OrganizationalUnit = one("organizationalUnit")
	n.Country = one("country")
	n.Province = one("province")
	n.Locality = one("locality")
	n.PostalCode = one("postalCode")
	n.StreetAddress = provider.Strings(s, "streetAddresses")
	n.SerialNumber = provider.String(s, "serialNumber")
	if e := provider.String(s, "emailAddress"); e != "" {
		n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{
			Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: e,
		})
	}
	return n
}

func sans(in resource.PropertyMap) ([]string, []net.IP, []*url.URL, error) {
	var ips []net.IP
	for _, s := range provider.Strings(in, "ipAddresses") {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, nil, nil, fmt.Errorf("invalid IP address %q", s)
		}
		ips = append(ips, ip)
	}
	var uris []*url.URL
	for _, s := range provider.Strings(in, "uris") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("invalid URI %q: %w", s, err)
		}
		uris = append(uris, u)
	}
	return provider.Strings(in, "dnsNames"), ips, uris, nil
}

// usage maps the Terraform tls provider's allowed_uses names.
func usage(name string) (x509.KeyUsage, x509.ExtKeyUsage, bool) {
	switch name {
	case "digital_signature":
		return x509.KeyUsageDigitalSignature, 0, true
	case "content_commitment":
		return x509.KeyUsageContentCommitment, 0, true
	case "key_encipherment":
		return x509.KeyUsageKeyEncipherment, 0, true
	case "data_encipherment":
		return x509.KeyUsageDataEncipherment, 0, true
	case "key_agreement":
		return x509.KeyUsageKeyAgreement, 0, true
	case "cert_signing":
		return x509.KeyUsageCertSign, 0, true
	case "crl_signing":
		return x509.KeyUsageCRLSign, 0, true
	case "encipher_only":
		return x509.KeyUsageEncipherOnly, 0, true
	case "decipher_only":
		return x509.KeyUsageDecipherOnly, 0, true
	}
	ext := map[string]x509.ExtKeyUsage{
		"any_extended": x509.ExtKeyUsageAny, "server_auth": x509.ExtKeyUsageServerAuth,
		"client_auth": x509.ExtKeyUsageClientAuth, "code_signing": x509.ExtKeyUsageCodeSigning,
		"email_protection": x509.ExtKeyUsageEmailProtection, "ipsec_end_system": x509.ExtKeyUsageIPSECEndSystem,
		"ipsec_tunnel": x509.ExtKeyUsageIPSECTunnel, "ipsec_user": x509.ExtKeyUsageIPSECUser,
		"timestamping": x509.ExtKeyUsageTimeStamping, "ocsp_signing": x509.ExtKeyUsageOCSPSigning,
		"microsoft_server_gated_crypto":     x509.ExtKeyUsageMicrosoftServerGatedCrypto,
		"netscape_server_gated_crypto":      x509.ExtKeyUsageNetscapeServerGatedCrypto,
		"microsoft_commercial_code_signing": x509.ExtKeyUsageMicrosoftCommercialCodeSigning,
		"microsoft_kernel_code_signing":     x509.ExtKeyUsageMicrosoftKernelCodeSigning,
	}
	if e, ok := ext[name]; ok {
		return 0, e, true
	}
	return 0, 0, false
}

// ---------------------------------------------------------------- CSR and certificates

func createCertRequest(in resource.PropertyMap) (string, resource.PropertyMap, error) {
	key, alg, err := parsePrivateKey(provider.String(in, "privateKeyPem"))
	if err != nil {
		return "", nil, err
	}
	dns, ips, uris, err := sans(in)
	if err != nil {
		return "", nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: subject(in), DNSNames: dns, IPAddresses: ips, URIs: uris,
	}, key)
	if err != nil {
		return "", nil, err
	}
	sum := sha1.Sum(der) //nolint:gosec
	return hex.EncodeToString(sum[:]), resource.PropertyMap{
		"certRequestPem": resource.NewStringProperty(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))),
		"keyAlgorithm":   resource.NewStringProperty(alg),
	}, nil
}

func subjectKeyID(pub any) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes) //nolint:gosec
	return sum[:], nil
}

func createCert(t string, in resource.PropertyMap) (string, resource.PropertyMap, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", nil, err
	}
	hours := provider.Number(in, "validityPeriodHours", 0)
	if hours <= 0 {
		return "", nil, fmt.Errorf("validityPeriodHours must be > 0 (got %v)", hours)
	}
	// time.Now(), not UTC nor truncated: validityStartTime/validityEndTime carry its zone and nanoseconds
	// (x509 writes the certificate's own times in UTC whole seconds).
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now,
		NotAfter:              now.Add(time.Duration(hours * float64(time.Hour))),
		BasicConstraintsValid: true,
		IsCA:                  provider.Bool(in, "isCaCertificate"),
	}
	if tmpl.IsCA {
		if n := int(provider.Number(in, "maxPathLength", 0)); n > 0 {
			tmpl.MaxPathLen = n
		}
	}
	for _, u := range provider.Strings(in, "allowedUses") {
		ku, eku, ok := usage(u)
		if !ok {
			return "", nil, fmt.Errorf("unknown allowed use %q", u)
		}
		tmpl.KeyUsage |= ku
		if eku != 0 || u == "any_extended" {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, eku)
		}
	}

	var pub any
	var signer crypto.Signer
	parent := tmpl
	outs := resource.PropertyMap{}
	if t == tSelfSignedCert {
		key, alg, err := parsePrivateKey(provider.String(in, "privateKeyPem"))
		if err != nil {
			return "", nil, err
		}
		signer, pub = key, key.Public()
		tmpl.Subject = subject(in)
		if tmpl.DNSNames, tmpl.IPAddresses, tmpl.URIs, err = sans(in); err != nil {
			return "", nil, err
		}
		skid, err := subjectKeyID(pub)
		if err != nil {
			return "", nil, err
		}
		if provider.Bool(in, "setSubjectKeyId") {
			tmpl.SubjectKeyId = skid
		}
		if provider.Bool(in, "setAuthorityKeyId") {
			tmpl.AuthorityKeyId = skid
		}
		outs["keyAlgorithm"] = resource.NewStringProperty(alg)
	} else {
		blk, _ := pem.Decode([]byte(provider.String(in, "certRequestPem")))
		if blk == nil {
			return "", nil, errors.New("certRequestPem: no PEM block found")
		}
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			return "", nil, fmt.Errorf("certRequestPem: %w", err)
		}
		if err := csr.CheckSignature(); err != nil {
			return "", nil, fmt.Errorf("certRequestPem: bad signature: %w", err)
		}
		cblk, _ := pem.Decode([]byte(provider.String(in, "caCertPem")))
		if cblk == nil {
			return "", nil, errors.New("caCertPem: no PEM block found")
		}
		ca, err := x509.ParseCertificate(cblk.Bytes)
		if err != nil {
			return "", nil, fmt.Errorf("caCertPem: %w", err)
		}
		caKey, caAlg, err := parsePrivateKey(provider.String(in, "caPrivateKeyPem"))
		if err != nil {
			return "", nil, fmt.Errorf("caPrivateKeyPem: %w", err)
		}
		caPubDER, _ := x509.MarshalPKIXPublicKey(caKey.Public())
		certPubDER, _ := x509.MarshalPKIXPublicKey(ca.PublicKey)
		if string(caPubDER) != string(certPubDER) {
			return "", nil, errors.New("caPrivateKeyPem does not match the public key of caCertPem")
		}
		signer, pub, parent = caKey, csr.PublicKey, ca
		tmpl.Subject = csr.Subject
		tmpl.DNSNames, tmpl.IPAddresses, tmpl.URIs = csr.DNSNames, csr.IPAddresses, csr.URIs
		if provider.Bool(in, "setSubjectKeyId") {
			if tmpl.SubjectKeyId, err = subjectKeyID(pub); err != nil {
				return "", nil, err
			}
		}
		outs["caKeyAlgorithm"] = resource.NewStringProperty(caAlg)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return "", nil, err
	}
	outs["certPem"] = resource.NewStringProperty(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	// MarshalText, as terraform-provider-tls common_cert.go createCertificate: RFC 3339 with nanoseconds
	// (trailing zeros dropped) in the local zone, e.g. 2027-11-26T17:05:17.750041123-04:00.
	for k, at := range map[resource.PropertyKey]time.Time{"validityStartTime": tmpl.NotBefore, "validityEndTime": tmpl.NotAfter} {
		text, err := at.MarshalText()
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", k, err)
		}
		outs[k] = resource.NewStringProperty(string(text))
	}
	outs["readyForRenewal"] = resource.NewBoolProperty(false)
	if t == tLocallySignedCert && keyAlgorithm(pub) == "" {
		return "", nil, errors.New("certRequestPem: unsupported public key type")
	}
	return serial.String(), outs, nil
}
