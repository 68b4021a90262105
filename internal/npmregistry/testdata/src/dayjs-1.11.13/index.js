'use strict';
// A stand-in for dayjs in lxcfleet's test registry: the benchmark app only loads it.
module.exports = { VERSION: '1.11.13' };
