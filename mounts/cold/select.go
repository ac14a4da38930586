package cold

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/containerd/errdefs"
)

// SelectConfig is what Select chooses a driver from.
type SelectConfig struct {
	// Mode is auto (or empty), mount-s3, s3fs or local.
	Mode string
	// S3 locates the bucket; an empty Bucket means the storage backend is
	// the local directory LocalStorageDir.
	S3 S3Config
	// LocalStorageDir is the local object store's root (<state>/storage),
	// used by the local driver.
	LocalStorageDir string
	// Logger is required; Select logs which driver it chose and why.
	Logger *slog.Logger
}

// Select returns the driver for cfg.Mode. auto picks local when no bucket is
// configured, else mount-s3 when it is in PATH, else s3fs when it is in PATH.
// Explicit modes check their binary is present. Errors wrap
// errdefs.ErrInvalidArgument (bad configuration) or
// errdefs.ErrFailedPrecondition (binary missing on this host). opts go to the
// FUSE driver.
func Select(cfg SelectConfig, opts ...Option) (Driver, error) {
	if cfg.Logger == nil {
		return nil, fmt.Errorf("cold: logger is required: %w", errdefs.ErrInvalidArgument)
	}
	o := buildOptions(opts)
	log := cfg.Logger
	fuseCfg := FUSEConfig{S3: cfg.S3, Logger: cfg.Logger}

	find := func(name string) (string, error) {
		bin := name
		if o.binary != "" {
			bin = o.binary
		}
		p, err := o.lookPath(bin)
		if err != nil {
			return "", fmt.Errorf("cold: driver %s needs %q, which is not installed: %w: %w", name, bin, err, errdefs.ErrFailedPrecondition)
		}
		return p, nil
	}
	local := func(reason string) (Driver, error) {
		d, err := NewLocal(LocalConfig{StorageDir: cfg.LocalStorageDir, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		log.Info("cold storage driver selected", "driver", DriverLocal, "reason", reason, "storage_dir", cfg.LocalStorageDir)
		return d, nil
	}

	switch cfg.Mode {
	case "", DriverAuto:
		if cfg.S3.Bucket == "" {
			return local("auto: no S3 bucket configured, storage is a local directory")
		}
		if p, err := o.lookPath("mount-s3"); err == nil {
			log.Info("cold storage driver selected", "driver", DriverMountS3, "reason", "auto: mount-s3 found in PATH", "binary", p)
			return driverOrNil(NewMountS3(fuseCfg, append(slices.Clip(opts), WithBinary(p))...))
		}
		if p, err := o.lookPath("s3fs"); err == nil {
			log.Info("cold storage driver selected", "driver", DriverS3FS, "reason", "auto: mount-s3 not in PATH, s3fs found", "binary", p)
			return driverOrNil(NewS3FS(fuseCfg, append(slices.Clip(opts), WithBinary(p))...))
		}
		return nil, fmt.Errorf("cold: driver auto: neither mount-s3 nor s3fs is in PATH: %w", errdefs.ErrFailedPrecondition)
	case DriverMountS3, DriverS3FS:
		if cfg.S3.Bucket == "" {
			return nil, fmt.Errorf("cold: driver %s needs an S3 bucket: %w", cfg.Mode, errdefs.ErrInvalidArgument)
		}
		p, err := find(cfg.Mode)
		if err != nil {
			return nil, err
		}
		log.Info("cold storage driver selected", "driver", cfg.Mode, "reason", "configured", "binary", p)
		if cfg.Mode == DriverMountS3 {
			return driverOrNil(NewMountS3(fuseCfg, append(slices.Clip(opts), WithBinary(p))...))
		}
		return driverOrNil(NewS3FS(fuseCfg, append(slices.Clip(opts), WithBinary(p))...))
	case DriverLocal:
		if cfg.S3.Bucket != "" {
			return nil, fmt.Errorf("cold: driver local serves a local storage directory, but S3 bucket %q is configured: %w", cfg.S3.Bucket, errdefs.ErrInvalidArgument)
		}
		return local("configured")
	default:
		return nil, fmt.Errorf("cold: unknown driver %q (want auto, mount-s3, s3fs or local): %w", cfg.Mode, errdefs.ErrInvalidArgument)
	}
}

// driverOrNil keeps a failed constructor's typed nil out of the interface.
func driverOrNil[D Driver](d D, err error) (Driver, error) {
	if err != nil {
		return nil, err
	}
	return d, nil
}
