'use strict';
// A stand-in for lodash in lxcfleet's test registry: the benchmark app only loads it.
module.exports = { VERSION: '4.17.21' };
