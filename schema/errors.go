package schema

import (
	"database/sql"
	"errors"
)

func errorsIsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
