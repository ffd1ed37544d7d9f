set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row0.png.tmp.25646'
$m << EOD
0.125195 0.131665 0.0958984 0.137939 0.103223 0.191895 0.114038 0.100146
0.106396 0.108252 0.117725 0.140381 0.125024 0.147461 0.125488 0.129272
EOD
set title "Token choice, k=1: load (last epoch, first seed)"
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
