#!/usr/bin/perl
# debhelper sequence addon: Build-Depends: dh-sequence-xdphooks
use strict;
use warnings;
use Debian::Debhelper::Dh_Lib;

insert_after('dh_install', 'dh_xdphooks');

1;
