// Package crypto implements the IKEv2 cryptographic transforms roam
// negotiates: the HMAC-SHA2 PRFs and prf+ (RFC 7296 2.13, RFC 4868), the
// truncated HMAC-SHA2 integrity algorithms, protection of the Encrypted (SK)
// payload with AES-GCM (RFC 5282) or AES-CBC plus HMAC (RFC 7296 3.14), the
// key exchange groups with RFC 6989 peer value checks, and the key
// derivations of RFC 7296 2.14, 2.17 and 2.18.
//
// Transform identifiers are the IANA values carried in wire.Transform.ID.
// Nothing here keeps protocol state; callers own the keys they pass in.
//
// Importers alias the package as ikecrypto to avoid a clash with the
// standard library's crypto package.
package crypto
