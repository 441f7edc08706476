package policy

import (
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// Caps is `source.tailscale.caps`, a map(string, list(dyn)) from app
// capability name to the JSON-decoded values that grants give the peer.
//
// It is a CEL value of its own because cel-go's native types cannot declare
// a field of Go type any; the zero Caps is the empty map.
type Caps struct {
	m traits.Mapper
}

// NewCaps returns caps holding m; each value of m is one grant's JSON value
// decoded with encoding/json (maps, lists, strings, float64s, bools).
func NewCaps(m map[string][]any) Caps {
	if m == nil {
		return Caps{}
	}
	return Caps{m: types.DefaultTypeAdapter.NativeToValue(m).(traits.Mapper)}
}

var (
	capsType  = types.NewMapType(types.StringType, types.NewListType(types.DynType))
	emptyCaps = types.DefaultTypeAdapter.NativeToValue(map[string][]any{}).(traits.Mapper)
)

func (c Caps) mapper() traits.Mapper {
	if c.m == nil {
		return emptyCaps
	}
	return c.m
}

// Type reports CEL's map(string, list(dyn)); it is what declares the field.
func (Caps) Type() ref.Type { return capsType }

func (c Caps) ConvertToNative(t reflect.Type) (any, error) { return c.mapper().ConvertToNative(t) }
func (c Caps) ConvertToType(t ref.Type) ref.Val            { return c.mapper().ConvertToType(t) }
func (c Caps) Equal(o ref.Val) ref.Val                     { return c.mapper().Equal(o) }
func (c Caps) Value() any                                  { return c.mapper().Value() }
func (c Caps) Contains(k ref.Val) ref.Val                  { return c.mapper().Contains(k) }
func (c Caps) Get(k ref.Val) ref.Val                       { return c.mapper().Get(k) }
func (c Caps) Iterator() traits.Iterator                   { return c.mapper().Iterator() }
func (c Caps) Size() ref.Val                               { return c.mapper().Size() }
func (c Caps) Find(k ref.Val) (ref.Val, bool)              { return c.mapper().Find(k) }
