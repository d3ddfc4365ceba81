package config

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"hash"
)

// Encrypted private keys, as "ssl_password_file" unlocks them: PKCS#8
// with PBES2 (PBKDF2 and AES-CBC, what "openssl genrsa -aes128" and
// "openssl pkcs8 -topk8" write) and the older OpenSSL "Proc-Type:
// 4,ENCRYPTED" PEM. crypto/x509 reads neither encrypted form itself.

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type algorithm struct {
	OID    asn1.ObjectIdentifier
	Params asn1.RawValue `asn1:"optional"`
}

type encryptedKeyInfo struct {
	Algorithm algorithm
	Data      []byte
}

type pbes2Params struct {
	KDF    algorithm
	Cipher algorithm
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int       `asn1:"optional"`
	PRF        algorithm `asn1:"optional"`
}

var errBadPassword = errors.New("bad password read")

// decryptKeyPEM returns keyPEM with its key decrypted by the first of
// passwords that opens it, as an unencrypted PEM; a key that is not
// encrypted comes back as it is.
func decryptKeyPEM(keyPEM []byte, passwords []string) ([]byte, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return keyPEM, nil
	}
	switch {
	case block.Type == "ENCRYPTED PRIVATE KEY":
		for _, pw := range passwords {
			if der, err := decryptPKCS8(block.Bytes, pw); err == nil {
				return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
			}
		}
		return nil, errBadPassword
	//lint:ignore SA1019 the legacy form nginx users' keys still have; read with their own password
	case x509.IsEncryptedPEMBlock(block):
		for _, pw := range passwords {
			//lint:ignore SA1019 as above
			if der, err := x509.DecryptPEMBlock(block, []byte(pw)); err == nil {
				return pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der}), nil
			}
		}
		return nil, errBadPassword
	}
	return keyPEM, nil
}

// decryptPKCS8 opens a PKCS#8 EncryptedPrivateKeyInfo with PBES2.
func decryptPKCS8(der []byte, password string) ([]byte, error) {
	var info encryptedKeyInfo
	if _, err := asn1.Unmarshal(der, &info); err != nil {
		return nil, err
	}
	if !info.Algorithm.OID.Equal(oidPBES2) {
		return nil, errors.New("unsupported key encryption (PBES2 only)")
	}
	var p pbes2Params
	if _, err := asn1.Unmarshal(info.Algorithm.Params.FullBytes, &p); err != nil {
		return nil, err
	}
	if !p.KDF.OID.Equal(oidPBKDF2) {
		return nil, errors.New("unsupported key derivation (PBKDF2 only)")
	}
	var kp pbkdf2Params
	if _, err := asn1.Unmarshal(p.KDF.Params.FullBytes, &kp); err != nil {
		return nil, err
	}
	var iv []byte
	if _, err := asn1.Unmarshal(p.Cipher.Params.FullBytes, &iv); err != nil {
		return nil, err
	}
	var keyLen int
	switch {
	case p.Cipher.OID.Equal(oidAES128CBC):
		keyLen = 16
	case p.Cipher.OID.Equal(oidAES192CBC):
		keyLen = 24
	case p.Cipher.OID.Equal(oidAES256CBC):
		keyLen = 32
	default:
		return nil, errors.New("unsupported key cipher (AES-CBC only)")
	}
	prf := func() hash.Hash { return sha1.New() }
	switch {
	case kp.PRF.OID == nil || kp.PRF.OID.Equal(oidHMACSHA1):
	case kp.PRF.OID.Equal(oidHMACSHA256):
		prf = sha256.New
	case kp.PRF.OID.Equal(oidHMACSHA512):
		prf = sha512.New
	default:
		return nil, errors.New("unsupported PBKDF2 hash")
	}
	key, err := pbkdf2.Key(prf, password, kp.Salt, kp.Iterations, keyLen)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(iv) != block.BlockSize() || len(info.Data)%block.BlockSize() != 0 || len(info.Data) == 0 {
		return nil, errors.New("malformed encrypted key")
	}
	out := make([]byte, len(info.Data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, info.Data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > block.BlockSize() || pad > len(out) {
		return nil, errBadPassword
	}
	for _, b := range out[len(out)-pad:] {
		if int(b) != pad {
			return nil, errBadPassword
		}
	}
	out = out[:len(out)-pad]
	if _, err := x509.ParsePKCS8PrivateKey(out); err != nil {
		return nil, errBadPassword
	}
	return out, nil
}
