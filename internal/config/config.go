// Package config loads a service's configuration: a YAML file (unknown keys
// are errors), then environment overrides, then the service's own defaults
// and validation. Each service owns its Config type; this package only does
// the loading so that every service behaves the same way.
//
// Environment overrides name a field by its YAML path in upper case joined
// with underscores after a prefix: with prefix "HUBUIM_COMET", the field at
// yaml path tcp.addr is set by HUBUIM_COMET_TCP_ADDR. Scalars, durations and
// comma-separated lists of scalars can be overridden.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError names a configuration field that is wrong and why.
type FieldError struct {
	Field string // yaml path, e.g. "comet.tcp.addr"
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("config: %s: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a *FieldError for field.
func Errorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// LoadFile decodes the YAML file at path into dst. An empty path leaves dst
// unchanged.
func LoadFile(path string, dst any) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return Decode(data, dst)
}

// Decode decodes YAML into dst, rejecting keys dst has no field for.
func Decode(data []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// ApplyEnv sets fields of dst (a pointer to struct) from environment
// variables named prefix_PATH. lookup is os.LookupEnv in production.
func ApplyEnv(prefix string, dst any, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: ApplyEnv needs a pointer to a struct, got %T", dst)
	}
	return applyEnv(strings.ToUpper(prefix), "", v.Elem(), lookup)
}

var durationType = reflect.TypeOf(time.Duration(0))

func applyEnv(envPrefix, path string, v reflect.Value, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		name := tag[0]
		if name == "-" {
			continue
		}
		if slices.Contains(tag[1:], "inline") && f.Type.Kind() == reflect.Struct {
			// An inlined struct's fields sit at this level of the YAML.
			if err := applyEnv(envPrefix, path, v.Field(i), lookup); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		env := envPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(name))
		fpath := name
		if path != "" {
			fpath = path + "." + name
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			if err := applyEnv(env, fpath, fv, lookup); err != nil {
				return err
			}
			continue
		}
		s, ok := lookup(env)
		if !ok {
			continue
		}
		if err := setScalar(fv, s); err != nil {
			return &FieldError{Field: fpath, Err: fmt.Errorf("from %s: %w", env, err)}
		}
	}
	return nil
}

func setScalar(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 0, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 0, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetFloat(n)
	case reflect.Slice:
		parts := []string{}
		if s != "" {
			parts = strings.Split(s, ",")
		}
		sl := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setScalar(sl.Index(i), strings.TrimSpace(p)); err != nil {
				return err
			}
		}
		v.Set(sl)
	default:
		return fmt.Errorf("cannot set a %s from the environment", v.Type())
	}
	return nil
}

// Load reads the file at path (if any) into dst, then applies environment
// overrides with prefix.
func Load(path, envPrefix string, dst any) error {
	if err := LoadFile(path, dst); err != nil {
		return err
	}
	return ApplyEnv(envPrefix, dst, os.LookupEnv)
}
