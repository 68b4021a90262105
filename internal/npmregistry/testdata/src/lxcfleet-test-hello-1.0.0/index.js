'use strict';
const ms = require('ms');
module.exports = () => 'hello after ' + ms(1500);
