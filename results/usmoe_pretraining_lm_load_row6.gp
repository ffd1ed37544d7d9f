set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row6.png.tmp.25646'
$m << EOD
0.0929932 0.096521 0.119434 0.134167 0.151697 0.10946 0.142957 0.152771
0.136865 0.114111 0.102795 0.14823 0.088269 0.133594 0.157544 0.118591
EOD
set title "USMoE, k=2: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
