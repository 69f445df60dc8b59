package postgres

import "database/sql/driver"

var driverBadConn = driver.ErrBadConn
