package policy

import (
	"errors"
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// Secrets is `mcp.secrets`: whether the caller has each of the per-caller
// secrets of the call's target, by name (a stdio target's callerEnv
// variable, a remote target's callerHeaders header, "Authorization" for
// backendAuth.key): `mcp.secrets["GITHUB_TOKEN"]` or
// `"GITHUB_TOKEN" in mcp.secrets`. A name the target does not have reads
// false. A secret is looked up only when a rule reads it; the map cannot
// be listed. The zero Secrets has none.
type Secrets struct {
	has func(name string) bool
}

// NewSecrets returns the secrets that has says the caller has.
func NewSecrets(has func(name string) bool) Secrets { return Secrets{has: has} }

var (
	secretsType      = types.NewMapType(types.StringType, types.BoolType)
	errSecretsListed = errors.New("mcp.secrets cannot be listed: ask for a name")
)

func (s Secrets) lookup(k ref.Val) (bool, ref.Val) {
	name, ok := k.(types.String)
	if !ok {
		return false, types.MaybeNoSuchOverloadErr(k)
	}
	return s.has != nil && s.has(string(name)), nil
}

// Type reports CEL's map(string, bool); it is what declares the field.
func (Secrets) Type() ref.Type { return secretsType }

// Contains reports whether the caller has secret k.
func (s Secrets) Contains(k ref.Val) ref.Val {
	has, err := s.lookup(k)
	if err != nil {
		return err
	}
	return types.Bool(has)
}

// Get is Contains: a secret the caller lacks reads false.
func (s Secrets) Get(k ref.Val) ref.Val { return s.Contains(k) }

// Find is Get, found always.
func (s Secrets) Find(k ref.Val) (ref.Val, bool) {
	v := s.Contains(k)
	return v, !types.IsError(v)
}

func (Secrets) Iterator() traits.Iterator { return nil }
func (Secrets) Size() ref.Val             { return types.NewErrFromString(errSecretsListed.Error()) }
func (Secrets) ConvertToNative(reflect.Type) (any, error) {
	return nil, errSecretsListed
}
func (s Secrets) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return secretsType
	}
	return types.NewErrFromString(errSecretsListed.Error())
}
func (Secrets) Equal(ref.Val) ref.Val { return types.NewErrFromString(errSecretsListed.Error()) }
func (s Secrets) Value() any          { return s }
