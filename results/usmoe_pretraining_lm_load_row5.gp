set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row5.png.tmp.25646'
$m << EOD
0.0833171 0.14873 0.15625 0.118083 0.12002 0.123958 0.151937 0.0977051
0.114844 0.121354 0.100293 0.148861 0.134652 0.103678 0.119124 0.157194
EOD
set title "USMoE, k=1.5: load (last epoch, first seed)"
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
